package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/ambit-mesh/ambit/cni/enroll"
	"github.com/ambit-mesh/ambit/cni/netns"
	"github.com/ambit-mesh/ambit/cni/seqpacket"
)

// Plugin implements the CNI commands. Results are written to Stdout.
type Plugin struct {
	Stdout io.Writer
	Log    *slog.Logger
}

// Funcs returns the skel callbacks.
func (p Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// Add enrolls an ambient pod and passes the previous result on.
func (p Plugin) Add(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "ambit-cni must be chained after an interface plugin (no prevResult)", "")
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	if !pod.isPod() || slices.Contains(conf.ExcludeNamespaces, string(pod.K8S_POD_NAMESPACE)) {
		return p.pass(conf)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "ambit-cni: cannot convert prevResult", err.Error())
	}
	var ips []string
	for _, ip := range prev.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	ns, err := netns.Open(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "ambit-cni: cannot open the pod's network namespace", err.Error())
	}
	defer ns.Close()
	resp, err := p.call(conf, enroll.Request{Command: enroll.Add, ContainerID: args.ContainerID, Netns: args.Netns,
		PodNamespace: string(pod.K8S_POD_NAMESPACE), PodName: string(pod.K8S_POD_NAME), PodUID: string(pod.K8S_POD_UID), IPs: ips}, ns)
	if err != nil {
		return err
	}
	p.Log.Info("pod", "namespace", pod.K8S_POD_NAMESPACE, "pod", pod.K8S_POD_NAME, "outcome", resp.Outcome)
	return p.pass(conf)
}

// call asks the agent and turns every failure into a CNI error.
func (p Plugin) call(conf *Config, req enroll.Request, ns *os.File) (enroll.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	resp, err := enroll.Call(ctx, conf.AgentSocket, req, ns)
	if errors.Is(err, enroll.ErrUnreachable) {
		return resp, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("ambit-cni: node agent unreachable at %s; pod %s/%s not started (fail closed)", conf.AgentSocket, req.PodNamespace, req.PodName),
			err.Error())
	}
	if err != nil {
		return resp, types.NewError(types.ErrInternal, "ambit-cni: bad answer from node agent", err.Error())
	}
	if resp.Outcome == enroll.Failed {
		return resp, types.NewError(types.ErrInternal,
			fmt.Sprintf("ambit-cni: enrolling pod %s/%s failed", req.PodNamespace, req.PodName), resp.Error)
	}
	return resp, nil
}

func (p Plugin) pass(conf *Config) error {
	if conf.PrevResult == nil {
		return nil
	}
	r, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "ambit-cni: cannot convert prevResult", err.Error())
	}
	return r.PrintTo(p.Stdout)
}

// Del tells the agent the pod's sandbox is going. It never fails because the agent is
// away (a failing DEL would wedge the pod's teardown); the agent reconciles later.
func (p Plugin) Del(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	if !pod.isPod() || slices.Contains(conf.ExcludeNamespaces, string(pod.K8S_POD_NAMESPACE)) {
		return nil
	}
	_, err = p.call(conf, enroll.Request{Command: enroll.Del, ContainerID: args.ContainerID, Netns: args.Netns,
		PodNamespace: string(pod.K8S_POD_NAMESPACE), PodName: string(pod.K8S_POD_NAME), PodUID: string(pod.K8S_POD_UID)}, nil)
	if err != nil {
		p.Log.Warn("DEL: node agent did not confirm; it reconciles on its own", "namespace", pod.K8S_POD_NAMESPACE, "pod", pod.K8S_POD_NAME, "err", err)
	}
	return nil
}

// Check asks the agent to verify an ambient pod's redirection is still in place.
func (p Plugin) Check(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "ambit-cni must be chained after an interface plugin (no prevResult)", "")
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	if !pod.isPod() || slices.Contains(conf.ExcludeNamespaces, string(pod.K8S_POD_NAMESPACE)) {
		return nil
	}
	ns, err := netns.Open(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, "ambit-cni: cannot open the pod's network namespace", err.Error())
	}
	defer ns.Close()
	_, err = p.call(conf, enroll.Request{Command: enroll.Check, ContainerID: args.ContainerID, Netns: args.Netns,
		PodNamespace: string(pod.K8S_POD_NAMESPACE), PodName: string(pod.K8S_POD_NAME), PodUID: string(pod.K8S_POD_UID)}, ns)
	return err
}

// Status reports the plugin ready only when the agent answers on its socket.
func (p Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	c, err := seqpacket.Dial(conf.AgentSocket, conf.Timeout())
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "ambit-cni: node agent not running", err.Error())
	}
	return c.Close()
}

// GC has nothing to collect: the agent owns all state and reconciles it.
func (p Plugin) GC(args *skel.CmdArgs) error {
	_, err := ParseConfig(args.StdinData)
	return err
}
