// Command ambit-cni-node is Ambit's node agent (a hostNetwork DaemonSet): it installs
// the ambit-cni plugin, enrolls and releases ambient pods on its node and hands them to
// ztunnel. See docs/cni.md for flags and behaviour.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/ambit-mesh/ambit/cni/agent"
	"github.com/ambit-mesh/ambit/internal/shutdown"
)

func main() {
	cfg := agent.Default()
	cfg.NodeName = os.Getenv("NODE_NAME")
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		cfg.Namespace = ns
	}
	var kubeconfig, probeSNAT, exempt string
	var debug bool
	flag.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "node this agent serves (default $NODE_NAME)")
	flag.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace of the agent's DaemonSet (default $POD_NAMESPACE)")
	flag.StringVar(&cfg.DaemonSet, "daemonset", cfg.DaemonSet, "name of the agent's DaemonSet; when it is gone at shutdown the agent uninstalls")
	flag.StringVar(&cfg.RunDir, "run-dir", cfg.RunDir, "directory for cni.sock and ztunnel.sock (a hostPath at the same path)")
	flag.StringVar(&cfg.Proc, "proc", cfg.Proc, "the host's procfs (hostPID)")
	flag.StringVar(&cfg.PluginBinary, "plugin-binary", cfg.PluginBinary, "ambit-cni binary to install")
	flag.StringVar(&cfg.CNIBinDir, "cni-bin-dir", cfg.CNIBinDir, "node's CNI plugin directory, as mounted")
	flag.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "node's CNI config directory, as mounted")
	flag.BoolVar(&cfg.Rules.RedirectDNS, "redirect-dns", cfg.Rules.RedirectDNS, "send pods' DNS to ztunnel's DNS proxy (15053)")
	flag.StringVar(&probeSNAT, "probe-snat", cfg.Rules.ProbeSNAT.String(), "source address for kubelet probes to enrolled pods (empty: no rewrite)")
	flag.StringVar(&exempt, "exempt-sources", "", "comma-separated extra inbound source prefixes never captured")
	flag.DurationVar(&cfg.AckTimeout, "ack-timeout", cfg.AckTimeout, "wait for ztunnel's ack of one message")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	flag.BoolVar(&debug, "debug", false, "debug logs")
	flag.Parse()

	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	klog.SetSlogLogger(logger.With("component", "client-go")) // client-go's logs, in the same JSON stream
	if err := parseAddrs(&cfg, probeSNAT, exempt); err != nil {
		log.Fatal(err)
	}
	if err := run(cfg, kubeconfig, logger); err != nil {
		log.Fatal(err)
	}
}

func parseAddrs(cfg *agent.Config, probeSNAT, exempt string) error {
	cfg.Rules.ProbeSNAT = netip.Addr{}
	if probeSNAT != "" {
		a, err := netip.ParseAddr(probeSNAT)
		if err != nil {
			return fmt.Errorf("-probe-snat: %w", err)
		}
		cfg.Rules.ProbeSNAT = a
	}
	for _, s := range strings.Split(exempt, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("-exempt-sources: %w", err)
		}
		cfg.Rules.ExemptSources = append(cfg.Rules.ExemptSources, p)
	}
	return nil
}

func run(cfg agent.Config, kubeconfig string, logger *slog.Logger) error {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, client, logger)
	if err != nil {
		return err
	}
	// The first signal drains; a second one exits at once.
	ctx, stop := shutdown.Context(context.Background())
	defer stop()
	return a.Run(ctx)
}
