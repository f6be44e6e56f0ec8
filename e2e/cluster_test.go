package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/harness"
	"github.com/ambit-mesh/ambit/internal/netns"
)

// Two workloads on different nodes: echo (HTTP 8080, TCP 9000) behind a Service, and a
// client pod to exec into. Node names come from the cluster's own node list.
const echoAndClient = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[2]s}
      containers:
      - name: echo
        image: ambit.local/echo:dev
        imagePullPolicy: Never
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}, {containerPort: 9000}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp, port: 9000, targetPort: 9000}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeSelector: {kubernetes.io/hostname: %[1]s}
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: ambit.local/client:dev
    imagePullPolicy: Never
    args: ["sleep"]
`

// echoApp is echoAndClient deployed and running.
type echoApp struct {
	nodes   []string // nodes[0] runs the client, nodes[1] echo
	echoPod string
	target  string // echo's TCP echo through its Service's DNS name
}

// deployEchoAndClient applies echoAndClient (plus extra manifests, if any) with the
// client and echo on different nodes, and waits until both are Ready.
func deployEchoAndClient(t *testing.T, ns *harness.Namespace, extra string) echoApp {
	t.Helper()
	nodes := nodeNames(t)
	ns.Apply(fmt.Sprintf(echoAndClient, nodes[0], nodes[1]) + extra)
	ns.Kubectl("rollout", "status", "deployment/echo", "--timeout=2m")
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/client")
	return echoApp{
		nodes:   nodes,
		echoPod: strings.TrimSpace(ns.Kubectl("get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[0].metadata.name}")),
		target:  "echo." + ns.Name + ".svc.cluster.local:9000",
	}
}

// sleeperPod is a pod of the client image that waits to be exec'ed into.
func sleeperPod(name, node, labels string) string {
	return fmt.Sprintf(`
---
apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {%s}}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: client, image: ambit.local/client:dev, imagePullPolicy: Never, args: ["sleep"]}
`, name, labels, node)
}

// nodeNames returns the cluster's node names, sorted.
func nodeNames(t *testing.T) []string {
	t.Helper()
	out, err := cl.Kubectl(context.Background(), "", "get", "nodes", "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(out)
	if len(names) < 2 {
		t.Fatalf("want at least 2 nodes, got %q", names)
	}
	return names
}

func TestClientOnOneNodeReachesServiceByDNSOnAnother(t *testing.T) {
	ns := cl.NewNamespace(t)
	echoPod := deployEchoAndClient(t, ns, "").echoPod
	echoNode := strings.TrimSpace(ns.Kubectl("get", "pod", echoPod, "-o", "jsonpath={.spec.nodeName}"))
	clientNode := strings.TrimSpace(ns.Kubectl("get", "pod", "client", "-o", "jsonpath={.spec.nodeName}"))
	if echoNode == clientNode {
		t.Fatalf("echo and client both on %s; the test needs two nodes", echoNode)
	}

	host := "echo." + ns.Name + ".svc.cluster.local"
	var body string
	ns.Eventually(time.Minute, "HTTP through the Service by DNS name", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "exec", "client", "--",
			"client", "http", "http://"+host+"/hello")
		body = out
		return err
	})
	var resp struct{ Pod, Path string }
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("echo answered %q: %v", body, err)
	}
	if resp.Pod != echoPod || resp.Path != "/hello" {
		t.Fatalf("echo answered pod=%q path=%q, want pod=%q path=/hello", resp.Pod, resp.Path, echoPod)
	}

	out := ns.Kubectl("exec", "client", "--", "client", "tcp", host+":9000", "-msg", "ping-over-tcp")
	if !strings.Contains(out, "ping-over-tcp") {
		t.Fatalf("TCP echo through the Service returned %q, want it to contain ping-over-tcp", out)
	}
}

func TestDeletedPodIsReplaced(t *testing.T) {
	ns := cl.NewNamespace(t)
	deployEchoAndClient(t, ns, "")
	old := strings.TrimSpace(ns.Kubectl("get", "pods", "-l", "app=echo", "-o", "jsonpath={.items[0].metadata.uid}"))

	ns.Kubectl("delete", "pods", "-l", "app=echo", "--wait=false")
	ns.Eventually(2*time.Minute, "a new Ready echo pod", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "pods", "-l", "app=echo", "-o",
			`jsonpath={range .items[*]}{.metadata.uid}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, l := range strings.Fields(out) {
			uid, ready, _ := strings.Cut(l, "=")
			if uid != old && ready == "True" {
				return nil
			}
		}
		return fmt.Errorf("pods: %q", out)
	})
}

func TestLogsAndExecReturnWhatThePodWrote(t *testing.T) {
	ns := cl.NewNamespace(t)
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	ns.Apply(fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: writer
    image: ambit.local/client:dev
    imagePullPolicy: Never
    args: ["echo-stdout", %q]
---
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: ambit.local/client:dev
    imagePullPolicy: Never
    args: ["sleep"]
`, marker))
	ns.Wait(2*time.Minute, "--for=jsonpath={.status.phase}=Succeeded", "pod/writer")
	if logs := ns.Kubectl("logs", "writer"); !strings.Contains(logs, marker) {
		t.Fatalf("kubectl logs writer = %q, want it to contain %q", logs, marker)
	}
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/shell")
	if out := ns.Kubectl("exec", "shell", "--", "client", "echo-stdout", marker+"-exec"); strings.TrimSpace(out) != marker+"-exec" {
		t.Fatalf("kubectl exec output = %q, want %q", out, marker+"-exec")
	}
}

func TestPortForwardReachesPod(t *testing.T) {
	ns := cl.NewNamespace(t)
	deployEchoAndClient(t, ns, "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pf := cl.KubectlCommand(ctx, "-n", ns.Name, "port-forward", "deployment/echo", "--address=127.0.0.1", ":8080")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = pf.Wait() }()
	port := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var p string
	select {
	case p = <-port:
	case <-time.After(time.Minute):
		t.Fatal("kubectl port-forward did not report a local port within a minute")
	}
	resp, err := http.Get("http://127.0.0.1:" + p + "/via-port-forward")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"/via-port-forward"`) {
		t.Fatalf("GET through port-forward: %s %q", resp.Status, b)
	}
}

func TestDeploymentScalesUpAndDown(t *testing.T) {
	ns := cl.NewNamespace(t)
	deployEchoAndClient(t, ns, "")
	for _, n := range []int{1, 3, 1} {
		ns.Kubectl("scale", "deployment/echo", fmt.Sprintf("--replicas=%d", n))
		ns.Eventually(2*time.Minute, fmt.Sprintf("deployment at %d ready pods", n), func() error {
			out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "pods", "-l", "app=echo", "-o",
				`jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
			if err != nil {
				return err
			}
			ready, total := 0, 0
			for _, l := range strings.Fields(out) {
				total++
				if l == "|True" {
					ready++
				}
			}
			if ready != n || total != n {
				return fmt.Errorf("%d pods, %d ready (no terminating), want %d", total, ready, n)
			}
			return nil
		})
	}
}

func TestCoreDNSAndSampleAppRun(t *testing.T) {
	for _, c := range []struct{ ns, selector string }{
		{"kube-system", "k8s-app=kube-dns"},
		{"demo", "app=echo"},
		{"demo", "app=client"},
	} {
		out, err := cl.Kubectl(context.Background(), "", "-n", c.ns, "get", "pods", "-l", c.selector, "-o",
			`jsonpath={range .items[*]}{.status.phase}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		if phases := strings.Fields(out); len(phases) == 0 || phases[0] != "Running" {
			t.Errorf("%s pods %s: phases %q, want Running", c.ns, c.selector, phases)
		}
	}
}

// clientPodAndEcho opens the network namespace of app's client pod and
// returns it with the echo pod's address (its IP and port 9000), for tests
// that connect from inside the pod as its application would.
func clientPodAndEcho(t *testing.T, ns *harness.Namespace, app echoApp) (*netns.Handle, string) {
	t.Helper()
	echoIP := strings.TrimSpace(ns.Kubectl("get", "pod", app.echoPod, "-o", "jsonpath={.status.podIP}"))
	uid := strings.TrimSpace(ns.Kubectl("get", "pod", "client", "-o", "jsonpath={.metadata.uid}"))
	path, err := harness.PodNetnsPath(uid)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return pod, net.JoinHostPort(echoIP, "9000")
}
