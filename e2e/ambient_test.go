package e2e

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/harness"
	"github.com/ambit-mesh/ambit/internal/netns"
)

// podState is what must not change when a running pod is enrolled or released.
type podState struct{ uid, restarts string }

func podStates(t *testing.T, ns *harness.Namespace, pods ...string) map[string]podState {
	t.Helper()
	m := map[string]podState{}
	for _, p := range pods {
		out := ns.Kubectl("get", "pod", p, "-o", `jsonpath={.metadata.uid} {.status.containerStatuses[0].restartCount}`)
		f := strings.Fields(out)
		if len(f) != 2 {
			t.Fatalf("pod %s: uid/restarts %q", p, out)
		}
		m[p] = podState{f[0], f[1]}
	}
	return m
}

// waitRedirection waits until every pod's ambient.istio.io/redirection annotation is
// want ("enabled", or "" for released).
func waitRedirection(ns *harness.Namespace, want string, pods ...string) {
	ns.Eventually(time.Minute, "redirection annotation "+strconv.Quote(want), func() error {
		for _, p := range pods {
			out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "pod", p, "-o",
				`jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != want {
				return fmt.Errorf("pod %s: annotation %q", p, out)
			}
		}
		return nil
	})
}

// tcpEcho sends msg from pod client to host:port through the TCP echo and returns
// the error, if any.
func tcpEcho(ns, client, target, msg string) error {
	out, err := cl.Kubectl(context.Background(), "", "-n", ns, "exec", client, "--",
		"client", "tcp", target, "-msg", msg)
	if err != nil {
		return err
	}
	if !strings.Contains(out, msg) {
		return fmt.Errorf("echo answered %q", out)
	}
	return nil
}

// ztunnelPod returns the name of the ztunnel pod on node.
func ztunnelPod(t *testing.T, node string) string {
	t.Helper()
	pod, err := cl.Kubectl(context.Background(), "", "-n", "istio-system", "get", "pods", "-l", "app=ztunnel",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil || strings.TrimSpace(pod) == "" {
		t.Fatalf("ztunnel on %s: %q %v", node, pod, err)
	}
	return strings.TrimSpace(pod)
}

// ztunnelMetrics returns the Prometheus text of the ztunnel on node.
func ztunnelMetrics(t *testing.T, node string) string {
	t.Helper()
	out, err := cl.Kubectl(context.Background(), "", "get", "--raw",
		"/api/v1/namespaces/istio-system/pods/"+ztunnelPod(t, node)+":15020/proxy/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metricSum adds the values of every sample of name whose labels contain all of want.
func metricSum(text, name string, want ...string) float64 {
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if !ok {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// TestAmbientUserStory is the first user story end to end: labeling a namespace
// enrolls its running pods without restarting them, their traffic crosses nodes over
// HBONE with mTLS and never in clear, an AuthorizationPolicy admits only the allowed
// service account, and removing the label releases the pods.
func TestAmbientUserStory(t *testing.T) {
	ns := cl.NewNamespace(t)
	app := deployEchoAndClient(t, ns, "")
	nodes, echoPod, target := app.nodes, app.echoPod, app.target
	// kube-proxy programs the new Service's endpoints within a second or so.
	ns.Eventually(time.Minute, "plain traffic before enrollment", func() error {
		return tcpEcho(ns.Name, "client", target, "before-enrollment")
	})
	before := podStates(t, ns, "client", echoPod)

	// 1. Enroll the running pods by labeling the namespace.
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode=ambient")
	waitRedirection(ns, "enabled", "client", echoPod)
	if after := podStates(t, ns, "client", echoPod); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("enrollment restarted pods: before %v after %v", before, after)
	}

	// 2. Traffic goes through both ztunnels over HBONE: mutual TLS in the metrics, port
	// 15008 and no plaintext on the link of the client's node.
	nsPath, ok := cl.Config.NodeNetnsPath(nodes[0])
	if !ok {
		t.Fatalf("no netns for node %s", nodes[0])
	}
	capture, err := harness.StartCapture(nsPath, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	canary := fmt.Sprintf("ambient-canary-%d", time.Now().UnixNano())
	ns.Eventually(time.Minute, "TCP echo through the mesh", func() error {
		return tcpEcho(ns.Name, "client", target, canary)
	})
	frames := capture.Stop()
	t.Logf("node %s link while meshed: %d frames, TCP ports %v", nodes[0], len(frames), harness.TCPPorts(frames))
	if harness.TCPPorts(frames)[15008] == 0 {
		t.Errorf("no HBONE (port 15008) on %s's link; ports seen: %v", nodes[0], harness.TCPPorts(frames))
	}
	if harness.Contains(frames, []byte(canary)) {
		t.Errorf("the payload crossed %s's link in clear", nodes[0])
	}
	m := ztunnelMetrics(t, nodes[1])
	t.Logf("destination ztunnel: %v mutual-TLS connections opened to echo",
		metricSum(m, "istio_tcp_connections_opened_total", `reporter="destination"`, `destination_workload="echo"`, `destination_workload_namespace="`+ns.Name+`"`, `connection_security_policy="mutual_tls"`))
	if v := metricSum(m, "istio_tcp_connections_opened_total", `reporter="destination"`,
		`destination_workload="echo"`, `destination_workload_namespace="`+ns.Name+`"`, `connection_security_policy="mutual_tls"`); v < 1 {
		t.Errorf("destination ztunnel counted %v mutual-TLS connections to echo; metrics:\n%s", v, m)
	}
	// Each connection has its JSON access line, written off the data path
	// (internal/logging.Async), and none was dropped.
	ztb := ztunnelPod(t, nodes[1])
	ns.Eventually(30*time.Second, "the destination ztunnel's access line", func() error {
		logs, err := cl.Kubectl(context.Background(), "", "-n", "istio-system", "logs", ztb)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `"msg":"connection complete"`) && strings.Contains(l, `"direction":"destination"`) &&
				strings.Contains(l, `"dst_namespace":"`+ns.Name+`"`) && strings.Contains(l, `"security":"mutual_tls"`) {
				return nil
			}
		}
		return fmt.Errorf("no access line for a mutual-TLS connection into %s", ns.Name)
	})
	if !strings.Contains(m, "\nambit_ztunnel_access_log_dropped_total 0\n") {
		t.Errorf("the destination ztunnel dropped access lines or does not count them; metrics:\n%s", m)
	}
	longLivedBytesCounted(t, ns, app, nodes)

	// 3. Only the client's service account may reach echo.
	other := cl.NewNamespace(t)
	other.Kubectl("label", "namespace", other.Name, "istio.io/dataplane-mode=ambient")
	other.Apply(sleeperPod("intruder", nodes[0], ""))
	other.Wait(2*time.Minute, "--for=condition=Ready", "pod/intruder")
	if err := tcpEcho(other.Name, "intruder", target, "before-policy"); err != nil {
		t.Fatalf("the second client cannot reach echo even before the policy: %v", err)
	}
	ns.Apply(fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-only-client}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/%s/sa/default"]}
`, ns.Name))
	ns.Eventually(time.Minute, "the second client refused", func() error {
		if err := tcpEcho(other.Name, "intruder", target, "after-policy"); err == nil {
			return fmt.Errorf("intruder still reaches echo")
		}
		return nil
	})
	if err := tcpEcho(ns.Name, "client", target, "allowed-after-policy"); err != nil {
		t.Fatalf("the allowed client is refused: %v", err)
	}

	// 4. Removing the label releases the pods; traffic flows in clear again.
	ns.Kubectl("delete", "authorizationpolicy", "echo-only-client")
	ns.Kubectl("label", "namespace", ns.Name, "istio.io/dataplane-mode-")
	waitRedirection(ns, "", "client", echoPod)
	if after := podStates(t, ns, "client", echoPod); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("release restarted pods: before %v after %v", before, after)
	}
	capture, err = harness.StartCapture(nsPath, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	plain := fmt.Sprintf("released-canary-%d", time.Now().UnixNano())
	ns.Eventually(time.Minute, "plain traffic after release", func() error {
		return tcpEcho(ns.Name, "client", target, plain)
	})
	frames = capture.Stop()
	t.Logf("node %s link after release: %d frames, TCP ports %v", nodes[0], len(frames), harness.TCPPorts(frames))
	if !harness.Contains(frames, []byte(plain)) {
		t.Errorf("after release the payload did not cross %s's link in clear: capture or release is wrong", nodes[0])
	}
}

// longLivedBytesCounted checks that a connection's bytes show in both
// ztunnels' Istio byte counters while it is still open (a database's or a
// gRPC stream's may stay open for days), as Istio's ztunnel has them.
func longLivedBytesCounted(t *testing.T, ns *harness.Namespace, app echoApp, nodes []string) {
	t.Helper()
	pod, target := clientPodAndEcho(t, ns, app)
	defer pod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pod.Dial(ctx, target, netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// More than every earlier connection of the namespace carried together.
	const size = 256 << 10
	exchange := func() {
		t.Helper()
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		msg := strings.Repeat("b", size)
		go io.WriteString(c, msg)
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes on the long-lived connection: %v", size, err)
		}
	}
	exchange()
	for _, tc := range []struct{ node, reporter string }{{nodes[0], "source"}, {nodes[1], "destination"}} {
		want := []string{`reporter="` + tc.reporter + `"`, `destination_workload="echo"`,
			`destination_workload_namespace="` + ns.Name + `"`, `connection_security_policy="mutual_tls"`}
		ns.Eventually(30*time.Second, fmt.Sprintf("the %s ztunnel's byte counters with the connection open", tc.reporter), func() error {
			m := ztunnelMetrics(t, tc.node)
			received := metricSum(m, "istio_tcp_received_bytes_total", want...)
			sent := metricSum(m, "istio_tcp_sent_bytes_total", want...)
			if received < size || sent < size {
				return fmt.Errorf("received %v, sent %v bytes, want at least %d each", received, sent, size)
			}
			return nil
		})
	}
	exchange() // still open: the counters did not wait for its end
}
