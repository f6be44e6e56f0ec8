package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/cni/enroll"
	"github.com/ambit-mesh/ambit/cni/rules"
)

// handlePlugin answers one CNI plugin request.
func (a *Agent) handlePlugin(ctx context.Context, req enroll.Request, f *os.File) (enroll.Outcome, error) {
	log := a.log.With("namespace", req.PodNamespace, "pod", req.PodName, "command", req.Command)
	if req.Command == enroll.Del {
		a.mu.Lock()
		defer a.mu.Unlock()
		key := req.PodNamespace + "/" + req.PodName
		for uid, m := range a.enrolled {
			if string(uid) == req.PodUID || (req.PodUID == "" && m.key == key) {
				a.forget(uid)
				log.Info("pod sandbox deleted")
			}
		}
		return enroll.Released, nil
	}
	pod, err := a.getPod(ctx, req.PodNamespace, req.PodName)
	if err != nil {
		return "", err
	}
	if req.PodUID != "" && string(pod.UID) != req.PodUID {
		return "", fmt.Errorf("pod %s/%s has UID %s, the runtime asked for %s", req.PodNamespace, req.PodName, pod.UID, req.PodUID)
	}
	ns, err := a.getNamespace(ctx, req.PodNamespace)
	if err != nil {
		return "", err
	}
	if want, why := Wants(pod, ns); !want {
		log.Debug("not capturing", "reason", why)
		return enroll.NotAmbient, nil
	}
	if req.Command == enroll.Check {
		ok, err := rules.Installed(int(f.Fd()), a.podRules)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", errors.New("redirection rules are missing from the pod's network namespace")
		}
		return enroll.Enrolled, nil
	}
	own, err := dup(f)
	if err != nil {
		return "", err
	}
	var ips []netip.Addr
	for _, s := range req.IPs {
		if ip, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, ip)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.enroll(ctx, pod, own, ips); err != nil {
		return "", err
	}
	log.Info("enrolled new pod", "ztunnel", a.zds.Connected())
	return enroll.Enrolled, nil
}

// getPod reads the pod from the cache, else from the API server (a pod the informer
// has not seen yet).
func (a *Agent) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if a.pods != nil {
		if p, err := a.pods.Pods(ns).Get(name); err == nil {
			return p, nil
		}
	}
	p, err := a.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	return p, nil
}

func (a *Agent) getNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if a.nss != nil {
		if n, err := a.nss.Get(name); err == nil {
			return n, nil
		}
	}
	n, err := a.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return n, nil
}
