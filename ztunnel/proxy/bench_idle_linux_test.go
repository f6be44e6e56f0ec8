package proxy

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

const (
	// idleTunnels is issue 4's figure: RSS with 10,000 idle tunneled
	// connections.
	idleTunnels = 10000
	// idleOpeners open the connections concurrently.
	idleOpeners = 32
	// ztunnelProcEnv makes the test binary, started again as a child, be
	// one ztunnel (the JSON ztunnelProcSpec in the variable), so that its
	// memory is a process's own, as a ztunnel pod's is.
	ztunnelProcEnv = "AMBIT_PROXY_BENCH_ZTUNNEL"
	// idleHeapProfileEnv, when set to a directory, makes
	// BenchmarkPrivilegedZtunnelIdleMemory write each ztunnel's heap
	// profile at 10,000 idle connections there (a.heap, b.heap), and once
	// they are closed (a-closed.heap, b-closed.heap).
	idleHeapProfileEnv = "AMBIT_BENCH_HEAP_DIR"
)

// ztunnelProcSpec is what a ztunnel child serves: one pod, in the network
// namespace at Netns, with the SVID in Cert/Key (PEM) and Root as its
// trust bundle.
type ztunnelProcSpec struct {
	Netns                                string
	UID, Name, Namespace, ServiceAccount string
	Cert, Key, Root                      string
}

// procStats is a ztunnel child's answer to "stats" or "gc".
type procStats struct {
	RSS        int64 // VmRSS
	RSSAnon    int64 // RssAnon: heap, stacks, runtime
	RSSFile    int64 // RssFile: the binary's pages (shared with every process running it)
	HeapInuse  int64
	StackInuse int64
	Goroutines int
	Threads    int64
	RuntimeSys int64 // runtime.MemStats.Sys minus the heap's: stacks, spans, GC metadata, profiling
	Conns      int // connections the proxy tracks
	Parked     int // idle sockets in hbone's parker
}

// BenchmarkPrivilegedZtunnelIdleMemory measures issue 4's memory figure:
// the resident memory of a ztunnel process holding 10,000 idle tunneled
// connections. Pod a opens 10,000 connections to the echo app in pod b,
// each through pod a's ztunnel, HBONE across the node link and pod b's
// ztunnel, sends one byte and gets it back, and leaves the connection
// open. Each ztunnel is its own process (the test binary started again),
// with the daemon's telemetry (Prometheus metrics and JSON access log),
// so its VmRSS is what a ztunnel pod's would be, minus the xDS client and
// hand-off socket; the app is a third process and the clients are this
// one. It reports each ztunnel's RSS configured with one warm connection,
// with the 10,000 idle connections as the runtime left it, and again
// after a forced collection that returns free memory to the kernel, and
// after all are closed.
func BenchmarkPrivilegedZtunnelIdleMemory(b *testing.B) {
	privtest.Require(b)
	if NewBenchTelemetry == nil {
		b.Fatal("NewBenchTelemetry is not set: bench_telemetry_ext_test.go is missing from the test binary")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		b.Fatalf("nsenter (util-linux) is needed to start the app in pod b: %v", err)
	}
	tp := newTopology(b)
	ca := hbonetest.NewCA(b, "cluster.local")
	dir := b.TempDir()
	za := startZtunnelProcess(b, "a", dir, ca, ztunnelProcSpec{Netns: "/run/netns/" + tp.ns("pa"),
		UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a"})
	zb := startZtunnelProcess(b, "b", dir, ca, ztunnelProcSpec{Netns: "/run/netns/" + tp.ns("pb"),
		UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b"})
	startEcho(b, tp.ns("pb"), 8080)
	hpa := tp.handle(b, "pa")
	b.Cleanup(func() { hpa.Close() })
	client := newNsDialer(b, hpa)
	tunnel := benchPath{name: "ztunnel x2", echo: "10.77.2.2:8080"}
	if err := waitEcho(client, tunnel); err != nil {
		b.Fatalf("no echo through the ztunnel processes: %v\n%s\n%s", err, za.stderr(), zb.stderr())
	}
	zs := []*ztunnelProcess{za, zb}
	snap := func(cmd string) []procStats {
		var s []procStats
		for _, z := range zs {
			s = append(s, z.ask(b, cmd))
		}
		return s
	}
	// The warm-up connection is closed; the pooled HBONE connection
	// stays (it idles out after 90 s).
	time.Sleep(2500 * time.Millisecond)
	base := snap("gc")

	conns, err := openIdle(client, tunnel.echo, idleTunnels)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		b.Fatalf("after %d of %d connections: %v", len(conns), idleTunnels, err)
	}
	// Relays park their sockets after hbone.IdleLinger (1 s; 2 s at most).
	time.Sleep(2500 * time.Millisecond)
	loaded := snap("stats")
	collected := snap("gc")
	if d := os.Getenv(idleHeapProfileEnv); d != "" {
		for _, z := range zs {
			z.ask(b, "heap "+filepath.Join(d, z.name+".heap"))
		}
	}
	for i, z := range zs {
		if loaded[i].Conns != idleTunnels {
			b.Errorf("ztunnel %s tracks %d connections, want %d", z.name, loaded[i].Conns, idleTunnels)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	var closed []procStats
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		closed = snap("gc")
		if closed[0].Conns == 0 && closed[1].Conns == 0 || time.Now().After(deadline) {
			break
		}
	}

	if d := os.Getenv(idleHeapProfileEnv); d != "" {
		for _, z := range zs {
			z.ask(b, "heap "+filepath.Join(d, z.name+"-closed.heap"))
		}
	}
	for i, z := range zs {
		b.ReportMetric(float64(loaded[i].RSS)/(1<<20), "ztunnel-"+z.name+"-RSS-MiB")
		b.ReportMetric(float64(loaded[i].RSS-base[i].RSS)/idleTunnels/1024, "ztunnel-"+z.name+"-KiB/conn")
	}
	b.ReportMetric(0, "ns/op")
	fmt.Print("\nztunnel idle memory, 10,000 connections pod a -> pod b (docs/performance.md)\n" +
		idleTable(zs, base, loaded, collected, closed))
}

// openIdle opens n connections to addr from the client, each carrying one
// byte each way, concurrently.
func openIdle(client *nsDialer, addr string, n int) ([]net.Conn, error) {
	var (
		mu       sync.Mutex
		conns    []net.Conn
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan struct{})
	)
	for range idleOpeners {
		wg.Go(func() {
			buf := make([]byte, 1)
			for range next {
				c, err := client.dial(addr, netns.SocketOptions{})
				if err == nil {
					if err = c.SetDeadline(time.Now().Add(10 * time.Second)); err == nil {
						if err = roundTrip(c, buf); err == nil {
							err = c.SetDeadline(time.Time{})
						}
					}
				}
				mu.Lock()
				if c != nil {
					conns = append(conns, c)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return conns, firstErr
}

func idleTable(zs []*ztunnelProcess, base, loaded, collected, closed []procStats) string {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', tabwriter.Debug)
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	row := func(name string, f func(i int) string) {
		fmt.Fprintf(w, "%s\t", name)
		for i := range zs {
			fmt.Fprintf(w, " %s\t", f(i))
		}
		fmt.Fprintln(w)
	}
	row("", func(i int) string { return "ztunnel " + zs[i].name })
	row("RSS, configured, one pooled HBONE connection", func(i int) string { return mib(base[i].RSS) })
	row("RSS with 10,000 idle connections", func(i int) string { return mib(loaded[i].RSS) })
	row("same, after runtime.GC + FreeOSMemory", func(i int) string { return mib(collected[i].RSS) })
	row("  of which anonymous / the binary's pages", func(i int) string {
		return mib(loaded[i].RSSAnon) + " / " + mib(loaded[i].RSSFile)
	})
	row("RSS added per idle connection", func(i int) string {
		return fmt.Sprintf("%.2f KiB", float64(loaded[i].RSS-base[i].RSS)/idleTunnels/1024)
	})
	row("Go heap in use / stacks, after GC", func(i int) string {
		return mib(collected[i].HeapInuse) + " / " + mib(collected[i].StackInuse)
	})
	row("goroutines per idle connection", func(i int) string {
		return fmt.Sprintf("%.3f", float64(loaded[i].Goroutines-base[i].Goroutines)/idleTunnels)
	})
	row("sockets parked", func(i int) string { return fmt.Sprint(loaded[i].Parked) })
	row("runtime's own memory (stacks, spans, GC) / threads", func(i int) string {
		return mib(collected[i].RuntimeSys) + fmt.Sprintf(" / %d", collected[i].Threads)
	})
	row("RSS after all closed, after GC", func(i int) string { return mib(closed[i].RSS) })
	row("  Go heap in use / stacks", func(i int) string {
		return mib(closed[i].HeapInuse) + " / " + mib(closed[i].StackInuse)
	})
	row("connections left after close", func(i int) string { return fmt.Sprint(closed[i].Conns) })
	w.Flush()
	return sb.String()
}

// ztunnelProcess is a ztunnel child: it takes one command per line on stdin
// ("stats", "gc", "heap PATH") and answers one line on stdout.
type ztunnelProcess struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errs *lockedBuffer
}

// startZtunnelProcess issues spec's SVID from ca into dir and starts the
// ztunnel child serving it; it is stopped at cleanup.
func startZtunnelProcess(b *testing.B, name, dir string, ca *hbonetest.CA, spec ztunnelProcSpec) *ztunnelProcess {
	id := spiffeid.RequireFromPath(td, "/ns/"+spec.Namespace+"/sa/"+spec.ServiceAccount)
	certPEM, keyPEM, err := ca.SVID(b, id.String()).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	spec.Cert, spec.Key, spec.Root = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, "root.crt")
	for path, data := range map[string][]byte{spec.Cert: certPEM, spec.Key: keyPEM,
		spec.Root: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	z := &ztunnelProcess{name: name, errs: &lockedBuffer{}}
	z.cmd = exec.Command(os.Args[0])
	z.cmd.Env = append(os.Environ(), ztunnelProcEnv+"="+string(js))
	z.cmd.Stderr = z.errs
	if z.in, err = z.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	out, err := z.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	z.out = bufio.NewReader(out)
	if err := z.cmd.Start(); err != nil {
		b.Fatalf("ztunnel %s: %v", name, err)
	}
	b.Cleanup(func() {
		z.in.Close() // the child stops on end of input
		done := make(chan struct{})
		go func() { _ = z.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = z.cmd.Process.Kill()
			<-done
		}
	})
	if line, err := z.out.ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("ztunnel %s did not start: %q, %v\n%s", name, line, err, z.stderr())
	}
	return z
}

func (z *ztunnelProcess) ask(b *testing.B, cmd string) procStats {
	b.Helper()
	if _, err := fmt.Fprintln(z.in, cmd); err != nil {
		b.Fatalf("ztunnel %s: %s: %v\n%s", z.name, cmd, err, z.stderr())
	}
	line, err := z.out.ReadString('\n')
	if err != nil {
		b.Fatalf("ztunnel %s: %s: %v\n%s", z.name, cmd, err, z.stderr())
	}
	var s procStats
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		b.Fatalf("ztunnel %s: %s: %q: %v", z.name, cmd, line, err)
	}
	return s
}

func (z *ztunnelProcess) stderr() string { return z.errs.String() }

type lockedBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.String()
}

// serveZtunnelProcess is the ztunnel child's main: it runs one proxy for
// spec (JSON ztunnelProcSpec) with the daemon's telemetry and the test
// workloads, says "ready", and answers commands until stdin ends. It runs
// inside testing.Benchmark for a testing.B (the proxy helpers take one).
func serveZtunnelProcess(specJSON string) {
	if os.Getenv(idleHeapProfileEnv) != "" {
		runtime.MemProfileRate = 1 // every allocation: the profile is per connection
	}
	var failed string
	testing.Benchmark(func(b *testing.B) {
		if b.N > 1 {
			return // testing.Benchmark asks again with larger N; once is the point
		}
		if err := ztunnelChild(b, specJSON); err != nil {
			failed = err.Error()
		}
		if b.Failed() {
			failed = "failed"
		}
	})
	if failed != "" {
		fmt.Fprintln(os.Stderr, "ztunnel process:", failed)
		os.Exit(1)
	}
}

func ztunnelChild(b *testing.B, specJSON string) error {
	var spec ztunnelProcSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("%s: %w", ztunnelProcEnv, err)
	}
	raiseNoFileToHard()
	certPEM, err := os.ReadFile(spec.Cert)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(spec.Key)
	if err != nil {
		return err
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return err
	}
	rootPEM, err := os.ReadFile(spec.Root)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(rootPEM)
	if block == nil {
		return fmt.Errorf("%s: no PEM block", spec.Root)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	h, err := netns.Open(spec.Netns)
	if err != nil {
		return err
	}
	benchTelemetry = NewBenchTelemetry
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	issuer := identity.IssuerFunc(func(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
		if id != svid.ID {
			return nil, nil, fmt.Errorf("this ztunnel has no SVID for %s", id)
		}
		return svid, []*x509.Certificate{root}, nil
	})
	z := runZtunnel(b, ctx, issuer, Pod{UID: spec.UID, Name: spec.Name, Namespace: spec.Namespace,
		ServiceAccount: spec.ServiceAccount, Sockets: NewNetnsSockets(h, DefaultMark)}, nil)
	wa, wb, svc := workloads()
	z.tables.UpsertWorkload(wa)
	z.tables.UpsertWorkload(wb)
	z.tables.UpsertService(svc)
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
		case "heap":
			runtime.GC()
			f, err := os.Create(arg)
			if err != nil {
				return err
			}
			err = pprof.Lookup("heap").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case "stats":
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := procStatus(os.Getpid())
		if err := out.Encode(procStats{RSS: st["VmRSS"], RSSAnon: st["RssAnon"], RSSFile: st["RssFile"], HeapInuse: int64(ms.HeapInuse),
			StackInuse: int64(ms.StackInuse), RuntimeSys: int64(ms.Sys - ms.HeapSys), Threads: st["Threads"], Goroutines: runtime.NumGoroutine(),
			Conns: z.proxy.Connections(), Parked: hbone.ParkedSockets()}); err != nil {
			return err
		}
	}
	return in.Err()
}
