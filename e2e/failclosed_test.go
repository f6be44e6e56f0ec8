package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/harness"
)

// ambientNamespace is a throwaway namespace labeled into ambient mode before any pod.
func ambientNamespace(t *testing.T) *harness.Namespace {
	t.Helper()
	ns := cl.NewNamespace(t)
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode=ambient")
	return ns
}

// daemonSetAway removes an istio-system DaemonSet's pods from every node (a node
// selector nothing matches) and waits until none run; the returned func, also
// registered as cleanup, brings them back and waits until they are Ready.
func daemonSetAway(t *testing.T, name, podLabel string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	kubectl := func(args ...string) (string, error) {
		return cl.Kubectl(ctx, "", append([]string{"-n", "istio-system"}, args...)...)
	}
	if _, err := kubectl("patch", "daemonset", name, "-p",
		`{"spec":{"template":{"spec":{"nodeSelector":{"ambit.dev/e2e-no-such-node":"true"}}}}}`); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if restored {
			return
		}
		restored = true
		if _, err := kubectl("patch", "daemonset", name, "--type=json", "-p",
			`[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]`); err != nil {
			t.Errorf("restore %s: %v", name, err)
			return
		}
		if _, err := kubectl("rollout", "status", "daemonset/"+name, "--timeout=2m"); err != nil {
			t.Errorf("restore %s: %v", name, err)
		}
	}
	t.Cleanup(restore)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := kubectl("get", "pods", "-l", podLabel, "-o", "name")
		if err == nil && strings.TrimSpace(out) == "" {
			return restore
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s pods still present after 2m: %q %v", name, out, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestAmbientNewPodWithProbeIsEnrolledAndOptOutIsNot(t *testing.T) {
	ns := ambientNamespace(t)
	nodes := nodeNames(t)
	// echo has an HTTP readiness probe: kubelet's probes must still reach it.
	app := deployEchoAndClient(t, ns, sleeperPod("optout", nodes[0], "istio.io/dataplane-mode: none"))
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/optout")
	waitRedirection(ns, "enabled", app.echoPod, "client")
	if a := ns.Kubectl("get", "pod", "optout", "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`); a != "" {
		t.Fatalf("pod labeled istio.io/dataplane-mode=none was captured: annotation %q", a)
	}
	ns.Eventually(time.Minute, "meshed client reaches echo", func() error {
		return tcpEcho(ns.Name, "client", app.target, "meshed")
	})
}

func TestAmbientFailsClosedWithoutZtunnel(t *testing.T) {
	ns := ambientNamespace(t)
	app := deployEchoAndClient(t, ns, "")
	nodes, target := app.nodes, app.target
	ns.Eventually(time.Minute, "traffic through the mesh", func() error {
		return tcpEcho(ns.Name, "client", target, "with-ztunnel")
	})

	restore := daemonSetAway(t, "ztunnel", "app=ztunnel")
	nsPath, _ := cl.Config.NodeNetnsPath(nodes[0])
	capture, err := harness.StartCapture(nsPath, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	canary := fmt.Sprintf("no-ztunnel-canary-%d", time.Now().UnixNano())
	for i := 0; i < 3; i++ {
		if err := tcpEcho(ns.Name, "client", target, canary); err == nil {
			t.Fatal("an ambient pod reached echo with no ztunnel on its node")
		}
	}
	if frames := capture.Stop(); harness.Contains(frames, []byte(canary)) {
		t.Fatal("with ztunnel down the payload left the node in clear")
	}

	// ztunnel back: the node agent replays its snapshot and traffic resumes.
	restore()
	ns.Eventually(time.Minute, "traffic after ztunnel restarts", func() error {
		return tcpEcho(ns.Name, "client", target, "ztunnel-back")
	})
}

func TestAmbientNodeAgentDownBlocksNewPodsUntilBack(t *testing.T) {
	ns := ambientNamespace(t)
	app := deployEchoAndClient(t, ns, "")
	waitRedirection(ns, "enabled", "client")

	restore := daemonSetAway(t, "ambit-cni-node", "app.kubernetes.io/name=ambit-cni-node")
	ns.Apply(sleeperPod("late", app.nodes[0], ""))
	ns.Eventually(time.Minute, "a sandbox failure event naming the node agent", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "events",
			"--field-selector", "involvedObject.name=late,reason=FailedCreatePodSandBox", "-o", "jsonpath={.items[*].message}")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "ambit") {
			return fmt.Errorf("events: %q", out)
		}
		return nil
	})
	if phase := ns.Kubectl("get", "pod", "late", "-o", "jsonpath={.status.phase}"); phase == "Running" {
		t.Fatal("a new ambient pod started while the node agent was down")
	}

	restore()
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/late")
	waitRedirection(ns, "enabled", "late", "client")
	// The restarted agent re-applied the running pod's rules: exactly one copy, as
	// rendered (cni/rules golden).
	uid := strings.TrimSpace(ns.Kubectl("get", "pod", "client", "-o", "jsonpath={.metadata.uid}"))
	podNS, err := harness.PodNetnsPath(uid)
	if err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command("nsenter", "--net="+podNS, "--", "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset in the client pod: %v: %s", err, got)
	}
	golden, err := os.ReadFile("../cni/rules/testdata/pod-default.golden")
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := strings.Cut(string(golden), "ip rule:")
	if strings.TrimSpace(string(got)) != strings.TrimSpace(want) {
		t.Fatalf("client pod rules after the agent restart differ from cni/rules/testdata/pod-default.golden:\n%s", got)
	}
	ns.Eventually(time.Minute, "enrolled pods still reach echo after the agent restart", func() error {
		return tcpEcho(ns.Name, "client", app.target, "agent-back")
	})
}
