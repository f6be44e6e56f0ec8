package main

import (
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

func TestParseFlagsTakesTheNodeFromTheEnvironment(t *testing.T) {
	env := map[string]string{"NODE_NAME": "ambit-node-1"}
	cfg, err := parseFlags(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "ambit-node-1" || cfg.Socket() != "/var/run/ambit/ambit-node-1/ztunnel.sock" ||
		cfg.ControlPlane != "istiod-lite.istio-system.svc:15012" || cfg.NodeID() != "ztunnel~ambit-node-1" {
		t.Errorf("config: %+v", cfg)
	}
}

func TestParseFlagsRejectsBadConfig(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{},                                      // no node
		{"-node-name=n", "-control-plane=nope"}, // no port
		{"-node-name=n", "-token=relative"},
		{"-node-name=n", "-log-level=loud"},
		{"-node-name=n", "extra"},
	} {
		if _, err := parseFlags(args, none); err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
		}
	}
}

// TestManifestSurgesAndDrainsWithinTheGracePeriod checks manifests/ztunnel.yaml
// against what a restart without dropped connections needs (docs/ztunnel.md,
// "Restart and upgrade"): the DaemonSet surges (the new pod runs before the old
// one stops), nothing keeps two pods from one node (hostNetwork or host ports),
// the readiness probe asks the health port ztunnel serves, and the drain the
// container's flags set ends before kubelet's SIGKILL.
func TestManifestSurgesAndDrainsWithinTheGracePeriod(t *testing.T) {
	b, err := os.ReadFile("../../manifests/ztunnel.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var d appsv1.DaemonSet
		if err := yaml.UnmarshalStrict([]byte(doc), &d); err == nil && d.Kind == "DaemonSet" {
			ds = &d
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet in manifests/ztunnel.yaml")
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		ru.MaxSurge == nil || ru.MaxSurge.IntValue() < 1 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("update strategy %+v: want RollingUpdate with maxSurge >= 1 and maxUnavailable 0", ds.Spec.UpdateStrategy)
	}
	spec := ds.Spec.Template.Spec
	if spec.HostNetwork {
		t.Error("hostNetwork: the surge pod's ports would clash with the old pod's on the node")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			t.Errorf("port %s has hostPort %d: the surge pod could not be scheduled beside the old one", p.Name, p.HostPort)
		}
	}
	env := map[string]string{"NODE_NAME": "node-1"}
	cfg, err := parseFlags(c.Args, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("container args %q: %v", c.Args, err)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil ||
		":"+c.ReadinessProbe.HTTPGet.Port.String() != cfg.HealthAddr || c.ReadinessProbe.HTTPGet.Path != "/healthz/ready" {
		t.Errorf("readiness probe %+v does not ask %s/healthz/ready", c.ReadinessProbe, cfg.HealthAddr)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if cfg.DrainTimeout+5*time.Second > grace {
		t.Errorf("drain %v does not end 5 s before the grace period %v: kubelet would kill draining connections", cfg.DrainTimeout, grace)
	}
}
