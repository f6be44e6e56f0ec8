package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/harness"
	"github.com/ambit-mesh/ambit/internal/netns"
)

// TestZtunnelRolloutDropsNoConnection restarts the ztunnel DaemonSet under load, as an
// upgrade does (docs/ztunnel.md, "Restart and upgrade"). From inside an ambient client
// pod (the test enters its network namespace, so the pod's redirection captures the
// connections exactly as the application's) it keeps one connection to echo on another
// node carrying bytes, and opens a new connection every 100 ms, while
// `kubectl rollout restart daemonset/ztunnel` runs and until the old ztunnels have
// exited. Every new connection must succeed; each node must have run its old and new
// ztunnel side by side (the surge); the long-lived connection must carry bytes without
// a pause through the takeover and the old ztunnels' drain, and be closed only at the
// drain deadline (-drain-timeout after the first SIGTERM; kubectl rollout status
// itself waits for the old pods to exit, so it ends then too); no payload may cross
// the client node's link in clear; and afterwards the new destination ztunnel must
// count the traffic as mutual TLS.
func TestZtunnelRolloutDropsNoConnection(t *testing.T) {
	ns := ambientNamespace(t)
	app := deployEchoAndClient(t, ns, "")
	waitRedirection(ns, "enabled", "client", app.echoPod)
	istio := func(args ...string) string {
		t.Helper()
		out, err := cl.Kubectl(context.Background(), "", append([]string{"-n", "istio-system"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if s := istio("get", "daemonset", "ztunnel", "-o",
		"jsonpath={.spec.updateStrategy.rollingUpdate.maxSurge} {.spec.updateStrategy.rollingUpdate.maxUnavailable}"); s != "1 0" {
		t.Fatalf("ztunnel DaemonSet maxSurge/maxUnavailable = %q, want \"1 0\" (manifests/ztunnel.yaml)", s)
	}
	grace, drain := ztunnelGraceAndDrain(t, istio("get", "daemonset", "ztunnel", "-o",
		"jsonpath={.spec.template.spec.terminationGracePeriodSeconds} {.spec.template.spec.containers[0].args}"))
	istio("rollout", "status", "daemonset/ztunnel", "--timeout=3m")

	pod, target := clientPodAndEcho(t, ns, app)
	defer pod.Close()
	ns.Eventually(time.Minute, "mesh traffic from the client pod's namespace", func() error {
		return roundTripFrom(context.Background(), pod, target, "warm-up")
	})
	nodePath, ok := cl.Config.NodeNetnsPath(app.nodes[0])
	if !ok {
		t.Fatalf("no netns for node %s", app.nodes[0])
	}
	capture, err := harness.StartCapture(nodePath, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()

	long, err := startLongLived(pod, target)
	if err != nil {
		t.Fatal(err)
	}
	defer long.stop()
	attempts := startAttempts(pod, target, 100*time.Millisecond)
	defer attempts.stop()
	watch := watchZtunnels(t)
	defer watch.stop()
	oldPods := strings.Fields(istio("get", "pods", "-l", "app=ztunnel", "-o", "jsonpath={.items[*].metadata.name}"))

	start := time.Now()
	istio("rollout", "restart", "daemonset/ztunnel")
	istio("rollout", "status", "daemonset/ztunnel", "--timeout=5m")
	rolled := time.Now()
	// The old pods are gone once the rollout is over; wait anyway, bounded.
	for _, p := range oldPods {
		if _, err := cl.Kubectl(context.Background(), "", "-n", "istio-system", "wait", "--for=delete", "pod/"+p, "--timeout=2m"); err != nil {
			t.Errorf("old ztunnel %s did not exit: %v", p, err)
		}
	}
	gone := time.Now()
	attempts.stop()
	watch.stop()
	long.stop()

	// The long-lived connection: no pause while it lived; closed by the old ztunnels'
	// drain, not before its deadline and not after the grace period.
	_, longErr := long.state()
	ended := long.failedAt()
	terms := watch.sigterms(grace)
	if len(terms) != len(oldPods) {
		t.Fatalf("saw the deletion of %d old ztunnel pods, want %d (%v)", len(terms), len(oldPods), oldPods)
	}
	slices.SortFunc(terms, time.Time.Compare)
	first, last := terms[0], terms[len(terms)-1]
	t.Logf("rollout: old ztunnels stopped %v and %v after it began, rollout status done after %v, old pods gone after %v",
		first.Sub(start).Round(time.Second), last.Sub(start).Round(time.Second), rolled.Sub(start).Round(time.Millisecond), gone.Sub(start).Round(time.Millisecond))
	t.Logf("long-lived connection: longest pause %v, ended %v after the first old ztunnel stopped (drain %v): %v",
		long.maxGap().Round(time.Millisecond), ended.Sub(first).Round(time.Millisecond), drain, longErr)
	if gap := long.maxGap(); gap > 2*time.Second {
		t.Errorf("the long-lived connection carried nothing for %v", gap.Round(time.Millisecond))
	}
	// deletionTimestamp has a resolution of one second.
	if longErr != nil && ended.Before(first.Add(drain-2*time.Second)) {
		t.Errorf("the long-lived connection ended %v after the first old ztunnel stopped, before its drain (%v): %v",
			ended.Sub(first).Round(time.Millisecond), drain, longErr)
	}
	if longErr == nil || ended.After(last.Add(grace+2*time.Second)) {
		t.Errorf("the long-lived connection was not closed by the end of the old ztunnels' grace period (%v): ended %v after the last stopped, %v",
			grace, ended.Sub(last).Round(time.Millisecond), longErr)
	}

	results := attempts.results()
	var failed []string
	var slowest time.Duration
	for _, r := range results {
		slowest = max(slowest, r.took)
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("at %v (%v): %v", r.at.Sub(start).Round(time.Millisecond), r.took.Round(time.Millisecond), r.err))
		}
	}
	t.Logf("%d new connections from %v before the rollout to the old ztunnels' exit; slowest %v",
		len(results), time.Since(start).Round(time.Second), slowest.Round(time.Millisecond))
	if len(failed) > 0 {
		t.Errorf("%d of %d new connections failed (times since the rollout started):\n%s", len(failed), len(results), strings.Join(failed, "\n"))
	}
	if len(results) < int(gone.Sub(start)/(200*time.Millisecond)) {
		t.Errorf("only %d connections attempted in %v", len(results), gone.Sub(start))
	}
	for _, node := range app.nodes {
		if n := watch.maxPerNode()[node]; n < 2 {
			t.Errorf("node %s never ran two ztunnels at once: the rollout did not surge", node)
		}
	}
	if frames := capture.Stop(); harness.Contains(frames, []byte(attemptPrefix)) || harness.Contains(frames, []byte(longPrefix)) {
		t.Error("a payload crossed the client node's link in clear during the rollout")
	}

	// Afterwards: mutual TLS, counted by the new destination ztunnel.
	newPods := strings.Fields(istio("get", "pods", "-l", "app=ztunnel", "-o", "jsonpath={.items[*].metadata.name}"))
	for _, p := range newPods {
		if slices.Contains(oldPods, p) {
			t.Fatalf("ztunnel pod %s survived the rollout", p)
		}
	}
	mtls := func() float64 {
		return metricSum(ztunnelMetrics(t, app.nodes[1]), "istio_tcp_connections_opened_total", `reporter="destination"`,
			`destination_workload="echo"`, `destination_workload_namespace="`+ns.Name+`"`, `connection_security_policy="mutual_tls"`)
	}
	before := mtls()
	for i := range 5 {
		if err := roundTripFrom(context.Background(), pod, target, fmt.Sprintf("after-%d", i)); err != nil {
			t.Fatalf("connection after the rollout: %v", err)
		}
	}
	ns.Eventually(time.Minute, "the new destination ztunnel counts the new connections as mutual TLS", func() error {
		if got := mtls(); got < before+5 {
			return fmt.Errorf("mutual-TLS connections opened to echo: %v, want at least %v", got, before+5)
		}
		return nil
	})
}

const (
	attemptPrefix = "rollout-attempt-"
	longPrefix    = "rollout-long-"
)

// roundTripFrom connects from inside the pod's network namespace, sends msg,
// half-closes and expects msg back.
func roundTripFrom(ctx context.Context, pod *netns.Handle, target, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pod.Dial(ctx, target, netns.SocketOptions{})
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(c, msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(got), err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo answered %q, want %q", got, msg)
	}
	return nil
}

// attempt is one new connection.
type attempt struct {
	at   time.Time
	took time.Duration
	err  error
}

// attempts opens a new connection every interval, each on its own goroutine so that a
// slow one does not delay the next.
type attempts struct {
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	mu   sync.Mutex
	got  []attempt
}

func startAttempts(pod *netns.Handle, target string, interval time.Duration) *attempts {
	a := &attempts{done: make(chan struct{})}
	a.wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-a.done:
				return
			case <-tick.C:
			}
			a.wg.Go(func() {
				at := time.Now()
				err := roundTripFrom(context.Background(), pod, target, fmt.Sprintf("%s%d", attemptPrefix, i))
				a.mu.Lock()
				defer a.mu.Unlock()
				a.got = append(a.got, attempt{at: at, took: time.Since(at), err: err})
			})
		}
	})
	return a
}

// stop stops opening connections and waits for those under way.
func (a *attempts) stop() {
	a.once.Do(func() { close(a.done) })
	a.wg.Wait()
}

func (a *attempts) results() []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.got)
	slices.SortFunc(out, func(x, y attempt) int { return x.at.Compare(y.at) })
	return out
}

// longLived is one connection that echoes a numbered message every 50 ms until it
// fails or is stopped.
type longLived struct {
	c    net.Conn
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu     sync.Mutex
	lastOK time.Time
	gap    time.Duration // longest time between two echoes
	err    error
	failed time.Time
}

func startLongLived(pod *netns.Handle, target string) (*longLived, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pod.Dial(ctx, target, netns.SocketOptions{})
	if err != nil {
		return nil, fmt.Errorf("long-lived connection: %w", err)
	}
	l := &longLived{c: c, done: make(chan struct{}), lastOK: time.Now()}
	l.wg.Go(l.run)
	return l, nil
}

func (l *longLived) run() {
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		select {
		case <-l.done:
			return
		case <-time.After(50 * time.Millisecond):
		}
		msg := fmt.Sprintf("%s%08d", longPrefix, i)
		_ = l.c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(l.c, msg)
		if err == nil {
			_, err = io.ReadFull(l.c, buf[:len(msg)])
		}
		if err == nil && string(buf[:len(msg)]) != msg {
			err = fmt.Errorf("echo answered %q, want %q", buf[:len(msg)], msg)
		}
		l.mu.Lock()
		now := time.Now()
		if err != nil {
			select {
			case <-l.done: // closed by stop, not by the mesh
			default:
				l.err, l.failed = err, now
			}
			l.mu.Unlock()
			return
		}
		l.gap = max(l.gap, now.Sub(l.lastOK))
		l.lastOK = now
		l.mu.Unlock()
	}
}

// state returns the time of the last echo and the error that ended the connection.
func (l *longLived) state() (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastOK, l.err
}

func (l *longLived) failedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed.IsZero() {
		return time.Now()
	}
	return l.failed
}

// maxGap is the longest time without an echo while the connection lived.
func (l *longLived) maxGap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gap
}

func (l *longLived) stop() {
	l.once.Do(func() {
		close(l.done)
		l.c.Close()
	})
	l.wg.Wait()
}

// ztunnelWatch polls the ztunnel pods and records, per node, the most that ran at
// once, and when each pod was marked for deletion.
type ztunnelWatch struct {
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	mu   sync.Mutex
	most map[string]int
	// deadline is each deleted pod's deletionTimestamp: when it was stopped plus its
	// grace period.
	deadline map[string]time.Time
}

func watchZtunnels(t *testing.T) *ztunnelWatch {
	w := &ztunnelWatch{done: make(chan struct{}), most: map[string]int{}, deadline: map[string]time.Time{}}
	w.wg.Go(func() {
		for {
			out, err := cl.Kubectl(context.Background(), "", "-n", "istio-system", "get", "pods", "-l", "app=ztunnel", "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}`)
			if err != nil {
				t.Logf("watching ztunnel pods: %v", err)
			}
			count := map[string]int{}
			w.mu.Lock()
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) < 3 {
					continue
				}
				if f[2] == "Running" {
					count[f[1]]++
				}
				if len(f) == 4 {
					if ts, err := time.Parse(time.RFC3339, f[3]); err == nil && w.deadline[f[0]].IsZero() {
						w.deadline[f[0]] = ts
					}
				}
			}
			for n, c := range count {
				w.most[n] = max(w.most[n], c)
			}
			w.mu.Unlock()
			select {
			case <-w.done:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
	return w
}

func (w *ztunnelWatch) stop() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}

func (w *ztunnelWatch) maxPerNode() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.most)
}

// sigterms returns when each deleted pod was stopped (kubelet sends SIGTERM at once).
func (w *ztunnelWatch) sigterms(grace time.Duration) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for _, d := range w.deadline {
		out = append(out, d.Add(-grace))
	}
	return out
}

// ztunnelGraceAndDrain parses "<terminationGracePeriodSeconds> <args JSON>" of the
// ztunnel DaemonSet.
func ztunnelGraceAndDrain(t *testing.T, s string) (grace, drain time.Duration) {
	t.Helper()
	secs, args, _ := strings.Cut(s, " ")
	g, err := time.ParseDuration(secs + "s")
	if err != nil {
		t.Fatalf("terminationGracePeriodSeconds %q: %v", secs, err)
	}
	m := regexp.MustCompile(`-drain-timeout=([0-9a-z.]+)`).FindStringSubmatch(args)
	if m == nil {
		t.Fatalf("no -drain-timeout in the ztunnel args %s", args)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatalf("-drain-timeout %q: %v", m[1], err)
	}
	return g, d
}
