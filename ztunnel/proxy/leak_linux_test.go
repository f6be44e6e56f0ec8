package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// raiseNoFile lifts RLIMIT_NOFILE to at least n for the test (each tunneled
// connection holds four sockets in this process) and restores it after.
func raiseNoFile(t *testing.T, n uint64) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= n {
		return
	}
	lim := unix.Rlimit{Cur: n, Max: max(n, old.Max)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE to %d: %v", n, err)
	}
	t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

// startTunedZtunnel is startZtunnel with tune adjusting the Config.
func startTunedZtunnel(t testing.TB, ctx context.Context, ca *hbonetest.CA, pod Pod, tune func(*Config)) *ztunnel {
	return runZtunnel(t, ctx, caIssuer(t, ca), pod, tune)
}

// caIssuer issues every identity asked for from ca, as istiod-lite's CA
// would.
func caIssuer(t testing.TB, ca *hbonetest.CA) identity.Issuer {
	return identity.IssuerFunc(func(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
		return ca.SVID(t, id.String()), []*x509.Certificate{ca.Cert}, nil
	})
}

// runZtunnel runs a proxy with certificates from issuer, serving pod, until
// the test ends. tune, if not nil, adjusts its Config. While a benchmark
// wants it (benchTelemetry), the proxy also reports to the daemon's
// telemetry.
func runZtunnel(t testing.TB, ctx context.Context, issuer identity.Issuer, pod Pod, tune func(*Config)) *ztunnel {
	certs, err := identity.NewManager(identity.Config{TrustDomain: td, Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	z := &ztunnel{tables: state.NewTables(), obs: newCounter()}
	var obs Observer = z.obs
	if benchTelemetry != nil {
		obs = teeObserver{z.obs, benchTelemetry(t, z.tables)}
	}
	cfg := Config{Tables: z.tables, Certs: certs, TrustDomain: td, Observer: obs,
		Log:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		ReadyTimeout: 2 * time.Second, DrainTimeout: time.Second}
	if tune != nil {
		tune(&cfg)
	}
	if z.proxy, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- z.proxy.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-z.proxy.Running()
	if err := z.proxy.AddPod(pod); err != nil {
		t.Fatal(err)
	}
	return z
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// echoPortEnv makes the test binary, started again as a child, be the pod's
// application: an echo server on that port, in its own process so that its sockets
// do not count against this one's RLIMIT_NOFILE.
const echoPortEnv = "AMBIT_PROXY_TEST_ECHO_PORT"

func TestMain(m *testing.M) {
	if port := os.Getenv(echoPortEnv); port != "" {
		serveEcho(port)
		return
	}
	if port := os.Getenv(holdEnv); port != "" {
		serveHold(port)
		return
	}
	if spec := os.Getenv(ztunnelProcEnv); spec != "" {
		serveZtunnelProcess(spec)
		return
	}
	os.Exit(m.Run())
}

// raiseNoFileToHard lifts this process's soft RLIMIT_NOFILE to its hard
// limit, as far as a child of the test can go.
func raiseNoFileToHard() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}

// serveEcho echoes every connection until the process is killed.
func serveEcho(port string) {
	raiseNoFileToHard()
	ln, err := net.Listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo: accept:", err)
			time.Sleep(10 * time.Millisecond) // EMFILE and the like pass
			continue
		}
		go func() {
			defer c.Close()
			// Plain copies: TCPConn's splice path would hold a pipe (two more
			// descriptors) per connection.
			_, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		}()
	}
}

// startEcho runs the echo application inside netns ns; it is killed at cleanup.
func startEcho(t testing.TB, ns string, port int) {
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", os.Args[0])
	cmd.Env = append(os.Environ(), echoPortEnv+"="+strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("echo server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("echo server did not start: %q, %v", line, err)
	}
}

// podAToPodB builds the two-pod topology with pod b's ztunnel (tuned by
// tune) and app, and returns that ztunnel and a function opening tunnels
// to the app from pod a.
func podAToPodB(t *testing.T, tune func(*Config)) (*ztunnel, func() (net.Conn, error)) {
	t.Helper()
	tp := newTopology(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca := hbonetest.NewCA(t, "cluster.local")
	hpa := tp.handle(t, "pa")
	t.Cleanup(func() { hpa.Close() })
	return startPodB(t, ctx, ca, tp, tune), tunnelsFromPodA(t, ctx, ca, hpa)
}

// startPodB runs pod b's ztunnel, configured with the test workloads, and
// the echo app in pod b on 8080.
func startPodB(t *testing.T, ctx context.Context, ca *hbonetest.CA, tp *topology, tune func(*Config)) *ztunnel {
	t.Helper()
	zb := startTunedZtunnel(t, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)}, tune)
	configure(zb)
	startEcho(t, tp.ns("pb"), 8080)
	return zb
}

// tunnelsFromPodA returns a function opening an HBONE tunnel from pod a
// (identity, source address, its network namespace) straight to pod b's
// ztunnel and its app on 8080, with ztunnel's own pooled client in this
// process.
func tunnelsFromPodA(t *testing.T, ctx context.Context, ca *hbonetest.CA, hpa *netns.Handle) func() (net.Conn, error) {
	t.Helper()
	certs, err := identity.NewManager(identity.Config{TrustDomain: td, Issuer: identity.IssuerFunc(
		func(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
			return ca.SVID(t, id.String()), []*x509.Certificate{ca.Cert}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.SVID(ctx, idA); err != nil { // loads the bundle too
		t.Fatal(err)
	}
	client, err := hbone.NewClient(hbone.ClientConfig{SVIDs: certs, Bundles: certs, IdleTimeout: 200 * time.Millisecond,
		DialTCP: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return hpa.Dial(ctx, dst.String(), netns.SocketOptions{Mark: DefaultMark})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, target := netip.AddrPortFrom(ipB, HBONEPort), netip.AddrPortFrom(ipB, 8080)
	return func() (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := client.Dial(dctx, hbone.Request{Source: idA, Destination: idB, SourceIP: ipA, Server: server, Target: target})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
}

// TestPrivilegedTenThousandTunnelsLeakNothing opens 10,000 HBONE tunnels at
// once from pod a's network namespace to pod b's ztunnel (15008: mTLS,
// authorization, the connection to the app inside pod b, the relay), checks
// every one carries bytes and is tracked by the proxy, that idle they hold
// no goroutine (their app sockets parked), closes them all, and checks that
// goroutines, open file descriptors and parked sockets come back to what
// they were before.
//
// The client is ztunnel's own pooled HBONE client (<= 100 tunnels per
// connection), in this process; the app is a separate process. Two whole
// ztunnels plus the app in one process would need 40,000 descriptors, more
// than the 20,000 hard limit of our CI machines (no CAP_SYS_RESOURCE); this
// way the process under test holds one descriptor per tunnel plus the pool.
func TestPrivilegedTenThousandTunnelsLeakNothing(t *testing.T) {
	privtest.Require(t)
	const (
		n       = 10000
		workers = 64
		slack   = 5 // goroutines or fds the runtime may hold on to
	)
	raiseNoFile(t, n+n/2)
	zb, tunnel := podAToPodB(t, func(*Config) {})

	settle := func(what string, goroutines, fds int, within time.Duration) (int, int) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			g, f, p := runtime.NumGoroutine(), openFDs(t), hbone.ParkedSockets()
			if zb.proxy.Connections() == 0 && g <= goroutines && f <= fds && p == 0 {
				return g, f
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines (want <= %d), %d fds (want <= %d), %d connections tracked, %d sockets parked",
					what, g, goroutines, f, fds, zb.proxy.Connections(), p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Warm up (certificates, first pooled connection), let the pool go
	// idle, then take the baseline.
	c, err := tunnel()
	if err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	if got, err := echo(c, "warm"); err != nil || got != "warm" {
		t.Fatalf("warm-up: %q, %v", got, err)
	}
	c.Close()
	time.Sleep(500 * time.Millisecond) // the pooled connection idles out
	baseG, baseF := settle("baseline", 1<<30, 1<<30, 5*time.Second)
	t.Logf("baseline: %d goroutines, %d fds", baseG, baseF)

	start := time.Now()
	conns := make([]net.Conn, n)
	defer func() { // on failure too
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := tunnel()
				if err == nil {
					conns[i] = c
					msg := fmt.Sprintf("%05d", i)
					var got string
					if got, err = echo(c, msg); err == nil && got != msg {
						err = fmt.Errorf("echo %q came back %q", msg, got)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("tunnel %d: %w", i, err)
					next.Store(n)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := zb.proxy.Connections(); got != n {
		t.Fatalf("with %d tunnels open, ztunnel tracks %d", n, got)
	}
	t.Logf("%d tunnels open in %v: %d goroutines, %d fds", n, time.Since(start).Round(time.Millisecond), runtime.NumGoroutine(), openFDs(t))
	// Idle, they hold no goroutine: ztunnel's relays park their app
	// sockets and wait for nothing on the tunnel side. What is left is per
	// HTTP/2 connection (<= 100 tunnels each), both ends in this process.
	idleSince := time.Now()
	for deadline := idleSince.Add(4*hbone.IdleLinger + 5*time.Second); ; {
		g, p := runtime.NumGoroutine(), hbone.ParkedSockets()
		if p >= n && g-baseG <= n/10 {
			t.Logf("idle after %v: %d goroutines (%+d), %d sockets parked", time.Since(idleSince).Round(time.Millisecond), g, g-baseG, p)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle tunnels: %d goroutines (%+d, want <= %+d), %d sockets parked (want >= %d)", n, g, g-baseG, n/10, p, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every one still works with all the others open.
	for _, i := range []int{0, n / 2, n - 1} {
		if got, err := echo(conns[i], "still"); err != nil || got != "still" {
			t.Fatalf("tunnel %d with all open: %q, %v", i, got, err)
		}
	}

	start = time.Now()
	for i, c := range conns {
		c.Close()
		conns[i] = nil
	}
	g, f := settle("after closing", baseG+slack, baseF+slack, 15*time.Second)
	t.Logf("back to %d goroutines, %d fds in %v", g, f, time.Since(start).Round(time.Millisecond))
	if o, cl := zb.obs.get(zb.obs.opened, Inbound), zb.obs.get(zb.obs.closed, Inbound); o != n+1 || cl != n+1 {
		t.Errorf("ztunnel saw %d inbound opened and %d closed, want %d each", o, cl, n+1)
	}
}

// TestPrivilegedParkedTunnelsCloseOnPolicyAndRemoval checks that tunnels
// idle long enough for their relays to be parked are closed as promptly as
// busy ones by a policy change and by the pod's removal (after the drain),
// and leave nothing parked.
func TestPrivilegedParkedTunnelsCloseOnPolicyAndRemoval(t *testing.T) {
	privtest.Require(t)
	const drain = 300 * time.Millisecond
	zb, tunnel := podAToPodB(t, func(c *Config) { c.DrainTimeout = drain })

	// openParked opens a tunnel, uses it, and waits until ztunnel has parked
	// it (its app socket; the tunnel side waits for nothing).
	openParked := func() net.Conn {
		t.Helper()
		c, err := tunnel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if got, err := echo(c, "hello"); err != nil || got != "hello" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		for deadline := time.Now().Add(3*hbone.IdleLinger + 5*time.Second); hbone.ParkedSockets() == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("the tunnel's relay did not park: %d sockets parked", hbone.ParkedSockets())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return c
	}
	// closedWithin checks that c's next read ends (not times out) within d,
	// and that ztunnel then tracks and parks nothing.
	closedWithin := func(c net.Conn, d time.Duration, why string) {
		t.Helper()
		start := time.Now()
		if err := c.SetReadDeadline(start.Add(d)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("parked tunnel after %s: read %v, want it closed within %v", why, err, d)
		}
		t.Logf("parked tunnel closed %v after %s", time.Since(start).Round(time.Millisecond), why)
		for deadline := time.Now().Add(5 * time.Second); zb.proxy.Connections() > 0 || hbone.ParkedSockets() > 0; {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %d connections tracked, %d sockets parked", why, zb.proxy.Connections(), hbone.ParkedSockets())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	c := openParked()
	zb.tables.UpsertPolicy(denyNsA(t))
	closedWithin(c, time.Second, "a DENY policy")
	zb.tables.Remove("ns-b/deny-a")

	c = openParked()
	zb.proxy.RemovePod("pod-b")
	closedWithin(c, drain+2*time.Second, "the pod's removal")
}
