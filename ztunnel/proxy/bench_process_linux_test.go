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
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
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
	// BenchmarkPrivilegedZtunnelProcesses write each ztunnel's heap
	// profile at 10,000 idle connections there (a.heap, b.heap), and once
	// they are closed (a-closed.heap, b-closed.heap).
	idleHeapProfileEnv = "AMBIT_BENCH_HEAP_DIR"
	// idleSettle is how long the connections stay idle before the RSS is
	// read again, without a forced collection: long enough for the
	// daemon's release after a burst (two of its 5 s intervals: the
	// burst's last, a quiet one). idleSettleEnv sets another duration
	// (150s: the runtime's periodic collection, every 2 minutes, and its
	// background scavenger).
	idleSettle    = 12 * time.Second
	idleSettleEnv = "AMBIT_BENCH_IDLE_SETTLE"
	// cpuProfileEnv, when set to a directory, makes each ztunnel write a
	// CPU profile of the new-connection phase there (ztunnel-a.cpu, ...),
	// which then runs five times as long.
	cpuProfileEnv = "AMBIT_BENCH_CPU_DIR"
)

// ztunnelProcSpec is what a ztunnel child serves: one pod, in the network
// namespace at Netns, with the SVID in Cert/Key (PEM) and Root as its
// trust bundle.
type ztunnelProcSpec struct {
	Netns                                string
	UID, Name, Namespace, ServiceAccount string
	Cert, Key, Root                      string
}

// holdEnv makes the test binary, started again as a child, be the floor of
// the idle measurement: a Go process that accepts connections on the port
// in the variable, answers one byte on each and keeps them, and nothing
// else. It answers commands as a ztunnel child does, counting no
// connections.
const holdEnv = "AMBIT_PROXY_BENCH_HOLD"

func serveHold(port string) {
	raiseNoFileToHard()
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, "floor: accept:", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go func() {
				var buf [1]byte
				if _, err := io.ReadFull(c, buf[:]); err == nil {
					_, _ = c.Write(buf[:])
				}
				mu.Lock()
				conns = append(conns, c) // kept: the floor never reads again
				mu.Unlock()
			}()
		}
	}()
	fmt.Println("ready")
	if err := answerCommands(func() int { return 0 }); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// procStats is a child's answer to a command.
type procStats struct {
	RSS     int64 // VmRSS
	RSSAnon int64 // RssAnon: heap, stacks, runtime
	RSSFile int64 // RssFile: the binary's pages (shared with every process running it)
	// The runtime's own accounting (runtime/metrics /memory/classes/...).
	HeapObjects int64 // live objects, and garbage not yet collected
	HeapUnused  int64 // free slots in spans that hold objects: fragmentation
	HeapFree    int64 // free pages not yet given back to the OS
	Stacks      int64
	RuntimeMeta int64 // span structures, GC metadata, poller descriptors, profiling buckets, other
	Goroutines  int
	Threads     int64
	Conns       int // connections the proxy tracks
	Parked      int // idle sockets in hbone's parker
	Detached    int // of those, held outside the net package
}

// BenchmarkPrivilegedZtunnelProcesses measures issue 4's memory figure:
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
//
// The floor, measured first in the same run, is a Go process that only
// accepts 10,000 connections (pod a's, across the same link), answers the
// one byte on each and keeps the sockets: what a Go program pays per idle
// TCP socket (runtime poller, net.TCPConn, addresses) with no state of its
// own. Each ztunnel holds one such socket per tunnel, plus its share of
// the pooled HBONE connections.
func BenchmarkPrivilegedZtunnelProcesses(b *testing.B) {
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
	hpa := tp.handle(b, "pa")
	b.Cleanup(func() { hpa.Close() })
	client := newNsDialer(b, hpa)

	floor := startChild(b, "floor", exec.Command("nsenter", "--net=/run/netns/"+tp.ns("nb"), "--", os.Args[0]), holdEnv+"=9002")
	floorPath := benchPath{name: "floor", echo: "192.168.77.2:9002", opts: netns.SocketOptions{Mark: DefaultMark}}
	floorStats := measureIdle(b, []*childProcess{floor}, client, floorPath, false)

	za := startZtunnelProcess(b, "a", dir, ca, ztunnelProcSpec{Netns: "/run/netns/" + tp.ns("pa"),
		UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a"})
	zb := startZtunnelProcess(b, "b", dir, ca, ztunnelProcSpec{Netns: "/run/netns/" + tp.ns("pb"),
		UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b"})
	startEcho(b, tp.ns("pb"), 8080)
	tunnel := benchPath{name: "ztunnel x2", echo: "10.77.2.2:8080"}
	if err := waitEcho(client, tunnel); err != nil {
		b.Fatalf("no echo through the ztunnel processes: %v\n%s\n%s", err, za.stderr(), zb.stderr())
	}
	zs := []*childProcess{za, zb}
	lat, cpu := newConnCPU(b, zs, client, tunnel)
	stats := measureIdle(b, zs, client, tunnel, true)
	for i := range zs {
		stats[i].newConnCPU = cpu[i]
	}
	for i, z := range zs {
		if stats[i].loaded.Conns != idleTunnels {
			b.Errorf("%s tracks %d connections, want %d", z.name, stats[i].loaded.Conns, idleTunnels)
		}
		if stats[i].closed.Conns != 0 {
			b.Errorf("%s still tracks %d connections after they all closed", z.name, stats[i].closed.Conns)
		}
		metric := strings.ReplaceAll(z.name, " ", "-")
		b.ReportMetric(float64(stats[i].loaded.RSS)/(1<<20), metric+"-RSS-MiB")
		b.ReportMetric(stats[i].perConn(), metric+"-KiB/conn")
		b.ReportMetric(float64(stats[i].settled.RSS)/(1<<20), metric+"-idle-RSS-MiB")
	}
	b.ReportMetric(floorStats[0].perConn(), "floor-KiB/conn")
	b.ReportMetric(us(lat.p50), "new-conn-p50-us")
	b.ReportMetric(us(lat.p99), "new-conn-p99-us")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("\nztunnel processes, pod a -> pod b (docs/performance.md)\n"+
		"new connections at %d/s through both: p50 %v, p99 %v, %.0f/s completed, %d failed\n",
		benchRate, lat.p50.Round(time.Microsecond), lat.p99.Round(time.Microsecond), lat.rate, lat.failed)
	fmt.Print(idleTable(append(zs, floor), append(stats, floorStats...), settleTime(b)))
}

// idleStats are a child's figures before, with and after the idle
// connections.
type idleStats struct {
	base, loaded, settled, collected, closed procStats
	newConnCPU                               float64 // the process's CPU at benchRate new connections/s, cores
}

// newConnCPU opens benchRequests new connections at benchRate through
// path (newConnLatency) and returns their latency and each child's own
// CPU meanwhile (cores), with CPU profiles if cpuProfileEnv asks.
func newConnCPU(b *testing.B, cs []*childProcess, client *nsDialer, path benchPath) (latency, []float64) {
	dir := os.Getenv(cpuProfileEnv)
	if dir != "" {
		for _, c := range cs {
			c.ask(b, "cpu-start "+filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".cpu"))
		}
	}
	cpu0 := make([]time.Duration, len(cs))
	for i, c := range cs {
		cpu0[i] = procCPU(c.cmd.Process.Pid)
	}
	start := time.Now()
	lat := newConnLatency(client, path)
	if dir != "" {
		// More samples for the profile; the figures are the first round's.
		for range 4 {
			newConnLatency(client, path)
		}
	}
	wall := time.Since(start)
	cpu := make([]float64, len(cs))
	for i, c := range cs {
		cpu[i] = (procCPU(c.cmd.Process.Pid) - cpu0[i]).Seconds() / wall.Seconds()
	}
	if dir != "" {
		for _, c := range cs {
			c.ask(b, "cpu-stop")
		}
	}
	if lat.failed > 0 {
		b.Logf("%s: %d of %d new connections failed, the first: %v", path.name, lat.failed, benchRequests, lat.firstErr)
	}
	return lat, cpu
}

// perConn is the RSS each idle connection added, KiB.
func (s idleStats) perConn() float64 {
	return float64(s.loaded.RSS-s.base.RSS) / idleTunnels / 1024
}

// measureIdle opens idleTunnels connections on path and reads the
// children's figures: configured (after a collection), with them idle as
// the runtime left it and after a collection, and, if closing is set,
// once they are closed (the floor does not notice).
func measureIdle(b *testing.B, cs []*childProcess, client *nsDialer, path benchPath, closing bool) []idleStats {
	snap := func(cmd string) []procStats {
		var s []procStats
		for _, c := range cs {
			s = append(s, c.ask(b, cmd))
		}
		return s
	}
	heap := func(suffix string) {
		if d := os.Getenv(idleHeapProfileEnv); d != "" {
			for _, c := range cs {
				c.ask(b, "heap "+filepath.Join(d, strings.ReplaceAll(c.name, " ", "-")+suffix+".heap"))
			}
		}
	}
	// A warm-up connection has been closed; a pooled HBONE connection
	// stays (it idles out after hbone.DefaultIdleTimeout, 5 minutes).
	time.Sleep(2500 * time.Millisecond)
	base := snap("gc")
	conns, err := openIdle(client, path.echo, path.opts, idleTunnels)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		b.Fatalf("%s: after %d of %d connections: %v", path.name, len(conns), idleTunnels, err)
	}
	// Relays park their sockets after hbone.IdleLinger (1 s; 2 s at most).
	time.Sleep(2500 * time.Millisecond)
	loaded := snap("stats")
	time.Sleep(settleTime(b))
	settled := snap("stats")
	collected := snap("gc")
	heap("")
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	out := make([]idleStats, len(cs))
	for i := range cs {
		out[i] = idleStats{base: base[i], loaded: loaded[i], settled: settled[i], collected: collected[i]}
	}
	if !closing {
		return out
	}
	// Closing is asynchronous (FINs through both hops, the relays' ends):
	// wait for the children to let go, then for what they had to go.
	var closed []procStats
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		closed = snap("stats")
		if !slices.ContainsFunc(closed, func(s procStats) bool { return s.Conns > 0 }) {
			break
		}
	}
	time.Sleep(2500 * time.Millisecond)
	closed = snap("gc")
	heap("-closed")
	for i := range cs {
		out[i].closed = closed[i]
	}
	return out
}

// openIdle opens n connections to addr from the client, each carrying one
// byte each way, concurrently.
func openIdle(client *nsDialer, addr string, opts netns.SocketOptions, n int) ([]net.Conn, error) {
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
				c, err := client.dial(addr, opts)
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

// settleTime is idleSettle, or what idleSettleEnv says.
func settleTime(b *testing.B) time.Duration {
	v := os.Getenv(idleSettleEnv)
	if v == "" {
		return idleSettle
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", idleSettleEnv, err)
	}
	return d
}

func idleTable(cs []*childProcess, st []idleStats, settle time.Duration) string {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', tabwriter.Debug)
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	row := func(name string, f func(s idleStats) string) {
		fmt.Fprintf(w, "%s\t", name)
		for i := range cs {
			fmt.Fprintf(w, " %s\t", f(st[i]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\t")
	for _, c := range cs {
		fmt.Fprintf(w, " %s\t", c.name)
	}
	fmt.Fprintln(w)
	row("RSS, configured", func(s idleStats) string { return mib(s.base.RSS) })
	row("RSS with 10,000 idle connections", func(s idleStats) string { return mib(s.loaded.RSS) })
	row("  anonymous / the binary's pages", func(s idleStats) string {
		return mib(s.loaded.RSSAnon) + " / " + mib(s.loaded.RSSFile)
	})
	row("RSS added per idle connection", func(s idleStats) string { return fmt.Sprintf("%.2f KiB", s.perConn()) })
	row(fmt.Sprintf("same, %s later, no forced collection", settle), func(s idleStats) string {
		return fmt.Sprintf("%s (%.2f KiB)", mib(s.settled.RSS), float64(s.settled.RSS-s.base.RSS)/idleTunnels/1024)
	})
	row("same, after runtime.GC + FreeOSMemory", func(s idleStats) string {
		return fmt.Sprintf("%s (%.2f KiB)", mib(s.collected.RSS), float64(s.collected.RSS-s.base.RSS)/idleTunnels/1024)
	})
	row("  Go heap: live objects / unused in spans / free pages", func(s idleStats) string {
		return mib(s.collected.HeapObjects) + " / " + mib(s.collected.HeapUnused) + " / " + mib(s.collected.HeapFree)
	})
	row("  stacks / runtime's own (mapped) / threads", func(s idleStats) string {
		return mib(s.collected.Stacks) + " / " + mib(s.collected.RuntimeMeta) + fmt.Sprintf(" / %d", s.collected.Threads)
	})
	row("CPU at 1,000 new connections/s, % of a core", func(s idleStats) string {
		if s.newConnCPU == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*s.newConnCPU)
	})
	row("sockets parked / detached, idle", func(s idleStats) string {
		return fmt.Sprintf("%d / %d", s.settled.Parked, s.settled.Detached)
	})
	row("goroutines per idle connection", func(s idleStats) string {
		return fmt.Sprintf("%.3f", float64(s.loaded.Goroutines-s.base.Goroutines)/idleTunnels)
	})
	row("RSS after all closed, after GC", func(s idleStats) string {
		if s.closed.RSS == 0 {
			return "-"
		}
		return mib(s.closed.RSS)
	})
	row("  Go heap: live objects / unused in spans", func(s idleStats) string {
		if s.closed.RSS == 0 {
			return "-"
		}
		return mib(s.closed.HeapObjects) + " / " + mib(s.closed.HeapUnused)
	})
	w.Flush()
	return sb.String()
}

// childProcess is the test binary started again as a ztunnel or as the
// floor: it takes one command per line on stdin (answerCommands) and
// answers one line on stdout.
type childProcess struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errs *logBuffer
}

// startZtunnelProcess issues spec's SVID from ca into dir and starts the
// ztunnel child serving it; it is stopped at cleanup.
func startZtunnelProcess(b *testing.B, name, dir string, ca *hbonetest.CA, spec ztunnelProcSpec) *childProcess {
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
	return startChild(b, "ztunnel "+name, exec.Command(os.Args[0]), ztunnelProcEnv+"="+string(js))
}

// startChild starts cmd (the test binary, perhaps under nsenter) with env
// added, as a child answering commands; it is stopped at cleanup.
func startChild(b *testing.B, name string, cmd *exec.Cmd, env string) *childProcess {
	z := &childProcess{name: name, errs: &logBuffer{}, cmd: cmd}
	z.cmd.Env = append(os.Environ(), env)
	z.cmd.Stderr = z.errs
	var err error
	if z.in, err = z.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	out, err := z.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	z.out = bufio.NewReader(out)
	if err := z.cmd.Start(); err != nil {
		b.Fatalf("%s: %v", name, err)
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
		b.Fatalf("%s did not start: %q, %v\n%s", name, line, err, z.stderr())
	}
	return z
}

func (z *childProcess) ask(b *testing.B, cmd string) procStats {
	b.Helper()
	if _, err := fmt.Fprintln(z.in, cmd); err != nil {
		b.Fatalf("%s: %s: %v\n%s", z.name, cmd, err, z.stderr())
	}
	line, err := z.out.ReadString('\n')
	if err != nil {
		b.Fatalf("%s: %s: %v\n%s", z.name, cmd, err, z.stderr())
	}
	var s procStats
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		b.Fatalf("%s: %s: %q: %v", z.name, cmd, line, err)
	}
	return s
}

// memoryClasses reads the runtime's /memory/classes/ metrics, keyed by the
// name between that prefix and ":bytes".
func memoryClasses() map[string]int64 {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if name, ok := strings.CutPrefix(d.Name, "/memory/classes/"); ok && strings.HasSuffix(name, ":bytes") {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	m := make(map[string]int64, len(samples))
	for _, s := range samples {
		name := strings.TrimSuffix(strings.TrimPrefix(s.Name, "/memory/classes/"), ":bytes")
		m[name] = int64(s.Value.Uint64())
	}
	return m
}

func (z *childProcess) stderr() string { return strings.Join(z.errs.lines(), "") }

// serveZtunnelProcess is the ztunnel child's main: it runs one proxy for
// spec (JSON ztunnelProcSpec) with the daemon's telemetry and the test
// workloads, says "ready", and answers commands until stdin ends. It runs
// inside testing.Benchmark for a testing.B (the proxy helpers take one).
func serveZtunnelProcess(specJSON string) {
	if TuneBenchProcess != nil {
		TuneBenchProcess()
	}
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
	svid, err := x509svid.Load(spec.Cert, spec.Key)
	if err != nil {
		return err
	}
	roots, err := x509bundle.Load(td, spec.Root)
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
		return svid, roots.X509Authorities(), nil
	})
	z := runZtunnel(b, ctx, issuer, Pod{UID: spec.UID, Name: spec.Name, Namespace: spec.Namespace,
		ServiceAccount: spec.ServiceAccount, Sockets: NewNetnsSockets(h, DefaultMark)}, nil)
	configure(z)
	fmt.Println("ready")
	return answerCommands(z.proxy.Connections)
}

// answerCommands is a child's command loop: "stats", "gc" (collect and
// return free memory first), "heap PATH" (write a heap profile first),
// "cpu-start PATH" and "cpu-stop" (a CPU profile) each get one JSON
// procStats line; it returns when stdin ends.
func answerCommands(conns func() int) error {
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	var cpuProfile *os.File
	defer func() {
		if cpuProfile != nil {
			pprof.StopCPUProfile()
			cpuProfile.Close()
		}
	}()
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "cpu-start":
			f, err := os.Create(arg)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return err
			}
			cpuProfile = f
		case "cpu-stop":
			if cpuProfile != nil {
				pprof.StopCPUProfile()
				if err := cpuProfile.Close(); err != nil {
					return err
				}
				cpuProfile = nil
			}
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
		case "heap":
			// The profile is as of the last complete cycle; two make sure
			// it shows what is live now (sync.Pools emptied included).
			runtime.GC()
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
		mem := memoryClasses()
		st := procStatus(os.Getpid())
		if err := out.Encode(procStats{RSS: st["VmRSS"], RSSAnon: st["RssAnon"], RSSFile: st["RssFile"],
			HeapObjects: mem["heap/objects"], HeapUnused: mem["heap/unused"], HeapFree: mem["heap/free"], Stacks: mem["heap/stacks"] + mem["os-stacks"],
			RuntimeMeta: mem["metadata/mcache/inuse"] + mem["metadata/mspan/inuse"] + mem["metadata/other"] + mem["profiling/buckets"] + mem["other"],
			Threads:     st["Threads"], Goroutines: runtime.NumGoroutine(), Conns: conns(), Parked: hbone.ParkedSockets(),
			Detached: hbone.DetachedSockets()}); err != nil {
			return err
		}
	}
	return in.Err()
}
