// Package agent is the Ambit node agent (ambit-cni-node): it installs the CNI plugin,
// answers the plugin's enrollment requests, watches its node's pods and their
// namespaces to enroll and release running pods on label changes, keeps each enrolled
// pod's redirection rules and the `ambient.istio.io/redirection` annotation in step,
// and hands the pods' network namespaces to ztunnel.
package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ambit-mesh/ambit/cni/rules"
)

// Config is the node agent's configuration (flags of ambit-cni-node; defaults in
// Default and docs/cni.md).
type Config struct {
	// NodeName is the node this agent serves (downward API spec.nodeName).
	NodeName string
	// Namespace and DaemonSet name the agent's own DaemonSet: when it is gone at
	// shutdown the agent uninstalls itself, otherwise (restart, upgrade) it leaves
	// everything in place so ambient pods stay captured and new ones fail closed.
	Namespace, DaemonSet string
	// RunDir holds the sockets (cni.sock for the plugin, ztunnel.sock for ztunnel); it
	// is a hostPath mounted at the same path, so the plugin finds it.
	RunDir string
	// Proc is the host's procfs (the pod runs with hostPID).
	Proc string
	// PluginBinary is the ambit-cni binary to install.
	PluginBinary string
	// CNIBinDir and CNIConfDir are the node's CNI directories as mounted in the agent.
	CNIBinDir, CNIConfDir string
	// Rules says how pods are captured.
	Rules rules.Config
	// AckTimeout bounds the wait for ztunnel's ack of one message.
	AckTimeout time.Duration
	// Resync is how often every pod is reconciled even without events.
	Resync time.Duration
}

// Default returns the defaults for everything but NodeName.
func Default() Config {
	return Config{
		Namespace:    "istio-system",
		DaemonSet:    "ambit-cni-node",
		RunDir:       "/var/run/ambit",
		Proc:         "/proc",
		PluginBinary: "/usr/local/bin/ambit-cni",
		CNIBinDir:    "/host/opt/cni/bin",
		CNIConfDir:   "/host/etc/cni/net.d",
		Rules:        rules.Default(),
		AckTimeout:   5 * time.Second,
		Resync:       5 * time.Minute,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required (set NODE_NAME from spec.nodeName)"))
	}
	for name, p := range map[string]string{"run dir": c.RunDir, "proc": c.Proc, "plugin binary": c.PluginBinary,
		"CNI bin dir": c.CNIBinDir, "CNI conf dir": c.CNIConfDir} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", name, p))
		}
	}
	if c.AckTimeout <= 0 {
		errs = append(errs, errors.New("ack timeout must be positive"))
	}
	if err := c.Rules.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PluginSocket is where the agent serves the CNI plugin.
func (c Config) PluginSocket() string { return filepath.Join(c.RunDir, "cni.sock") }

// ZtunnelSocket is where the agent serves ztunnel.
func (c Config) ZtunnelSocket() string { return filepath.Join(c.RunDir, "ztunnel.sock") }
