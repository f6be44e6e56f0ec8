package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambit-mesh/ambit/cni/enroll"
	"github.com/ambit-mesh/ambit/cni/netns"
	"github.com/ambit-mesh/ambit/cni/netns/netnstest"
	"github.com/ambit-mesh/ambit/cni/rules"
	"github.com/ambit-mesh/ambit/cni/zds"
	"github.com/ambit-mesh/ambit/cni/zds/zdstest"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

const (
	testUID = "0b5e6c1e-uid"
	testIP  = "10.244.1.7"
)

// TestPrivilegedEnrollIsAllOrNothing runs a CNI ADD through the agent into a
// throwaway pod netns, with a fake ztunnel connected and the node's probe rules in
// another throwaway netns (never the test's own). When the pod is deleted while
// ztunnel acks it, or ztunnel rejects it, the ADD fails and nothing is left: no
// table in the pod, no pod IP in the node set, ztunnel told Del (or never kept it).
func TestPrivilegedEnrollIsAllOrNothing(t *testing.T) {
	privtest.Require(t)
	for _, tt := range []struct {
		name string
		// onAdd is the fake ztunnel's answer to the Add; it may delete the pod first.
		onAdd   func(t *testing.T, client *fake.Clientset) string
		wantErr error // nil: enrolled
		events  []string
	}{{
		name:   "enrolled",
		onAdd:  func(*testing.T, *fake.Clientset) string { return "" },
		events: []string{"add " + testUID},
	}, {
		name: "pod deleted mid-enrollment",
		onAdd: func(t *testing.T, client *fake.Clientset) string {
			if err := client.CoreV1().Pods("demo").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
				t.Errorf("delete pod: %v", err)
			}
			return ""
		},
		wantErr: ErrPodGone,
		events:  []string{"add " + testUID, "del " + testUID},
	}, {
		name:    "ztunnel rejects",
		onAdd:   func(*testing.T, *fake.Clientset) string { return "no certificate" },
		wantErr: zds.ErrRejected,
		events:  []string{"add " + testUID},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			podNS, hostNS := netnstest.New(t), netnstest.New(t)
			client := fake.NewClientset(
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{DataplaneModeLabel: modeAmbient}}},
				&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: testUID},
					Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"}})
			cfg := Default()
			cfg.NodeName, cfg.RunDir = "node-a", t.TempDir()
			a, err := New(cfg, client, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			a.hostNetns = hostNS.File
			events := fakeZtunnel(t, a, func() string { return tt.onAdd(t, client) })

			out, err := a.handlePlugin(context.Background(), enroll.Request{Command: enroll.Add, PodNamespace: "demo",
				PodName: "web", PodUID: testUID, IPs: []string{testIP}}, podNS.File)

			installed, ierr := rules.Installed(podNS.Fd(), a.podRules)
			if ierr != nil {
				t.Fatal(ierr)
			}
			hostSet := hostNS.Run(t, "nft", "list", "set", "ip", rules.TableName, rules.ProbeSetName)
			if tt.wantErr == nil {
				if err != nil || out != enroll.Enrolled {
					t.Fatalf("handlePlugin = %q, %v; want enrolled", out, err)
				}
				if !installed || !strings.Contains(hostSet, testIP) || !a.zds.Has(testUID) || a.enrolled[testUID] == nil {
					t.Errorf("after enrolling: pod rules %v, node set %q, ztunnel has it %v, agent has it %v",
						installed, hostSet, a.zds.Has(testUID), a.enrolled[testUID] != nil)
				}
				// A ztunnel restart's listener hand-over resets nothing in the pod.
				var migrate []byte
				if err := netns.Do(podNS.File, func() (err error) {
					migrate, err = os.ReadFile(migrateReqSysctl)
					return err
				}); err != nil || strings.TrimSpace(string(migrate)) != "1" {
					t.Errorf("pod's net.ipv4.tcp_migrate_req = %q, %v; want 1", migrate, err)
				}
			} else {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "enroll pod demo/web") {
					t.Fatalf("handlePlugin = %q, %v; want an error naming the pod and wrapping %v", out, err, tt.wantErr)
				}
				if errors.Is(tt.wantErr, ErrPodGone) && !apierrors.IsNotFound(err) {
					t.Errorf("error %v does not wrap the API server's NotFound", err)
				}
				if ruleset := podNS.Run(t, "nft", "list", "ruleset"); installed || strings.TrimSpace(ruleset) != "" {
					t.Errorf("pod netns still holds rules (Installed %v):\n%s", installed, ruleset)
				}
				if ipRules := podNS.Run(t, "ip", "rule", "show"); strings.Contains(ipRules, "lookup 133") {
					t.Errorf("pod netns still holds the policy routing:\n%s", ipRules)
				}
				if strings.Contains(hostSet, testIP) {
					t.Errorf("node probe set still holds the pod IP:\n%s", hostSet)
				}
				if a.zds.Has(testUID) || len(a.enrolled) != 0 {
					t.Errorf("still registered: ztunnel side %v, agent %d pods", a.zds.Has(testUID), len(a.enrolled))
				}
			}
			if got := events(); strings.Join(got, ",") != strings.Join(tt.events, ",") {
				t.Errorf("ztunnel got %q, want %q", got, tt.events)
			}
		})
	}
}

// fakeZtunnel serves a.zds until the test ends with a zdstest client connected and
// past its snapshot. Each Add is answered with onAdd's error message ("" acks), every
// other request is acked. events returns the live requests seen so far.
func fakeZtunnel(t *testing.T, a *Agent, onAdd func() string) (events func() []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.zds.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("zds Run: %v", err)
		}
	})
	var cl *zdstest.Client
	for range 200 {
		var err error
		if cl, err = zdstest.Dial(a.cfg.ZtunnelSocket()); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cl == nil {
		t.Fatal("ztunnel socket never accepted")
	}
	got := make(chan string, 16)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			req, f, err := cl.Recv(10 * time.Second)
			if err != nil {
				return // closed by the cleanup below
			}
			if f != nil {
				f.Close()
			}
			ev, msg := zdstest.Event(req), ""
			if ev != "snapshot" {
				got <- ev
				if strings.HasPrefix(ev, "add ") {
					msg = onAdd()
				}
			}
			if err := cl.Ack(msg); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cl.Close()
		<-stopped
	})
	for range 200 {
		if a.zds.Connected() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !a.zds.Connected() {
		t.Fatal("fake ztunnel never completed its snapshot")
	}
	return func() []string {
		var out []string
		for {
			select {
			case ev := <-got:
				out = append(out, ev)
			default:
				return out
			}
		}
	}
}
