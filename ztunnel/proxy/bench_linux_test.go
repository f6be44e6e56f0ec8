package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// Benchmark knobs. Fixed amounts of work rather than b.N: each figure is a
// comparison between paths measured in the same run, not a per-op cost.
const (
	benchRate      = 1000             // requests (or new connections) per second
	benchRequests  = 3000             // requests per path and latency mode (3 s each)
	benchMsg       = 1024             // request and response size
	benchVolume    = 256 << 20        // bytes per throughput round
	benchRounds    = 3                // throughput rounds per path, interleaved; the median is reported
	benchIdleConns = 2000             // idle connections: 4 fds each in this process, under a 20,000 limit
	benchDialers   = 64               // client threads parked in pod a's namespace
	benchTimeout   = 2 * time.Second  // per request in the new-connection mode
	benchSetup     = 10 * time.Second // for stunnel4 to come up
)

// benchPath is one way for the client in pod a to reach an echo server and a
// sink on the other node.
type benchPath struct {
	name       string
	echo, sink string
	opts       netns.SocketOptions
	pids       func() []int // processes doing the tunnelling outside this one, if any
	// floor marks a relay pair, a floor for the others: it is not
	// measured idle, since its four sockets per connection in this
	// process would exceed the file limit.
	floor bool
	// persistentOnly skips the new-connection mode (a path that makes a
	// TLS handshake per connection).
	persistentOnly bool
	// from, when set, is where the client dials from instead of pod a.
	from *nsDialer
}

// client is the dialer the path's client uses.
func (p benchPath) client(def *nsDialer) *nsDialer {
	if p.from != nil {
		return p.from
	}
	return def
}

// BenchmarkPrivilegedZtunnel measures pod a -> ztunnel -> ztunnel -> pod b in
// the privileged netns topology (the CNI's in-pod rules, real HBONE) against
// direct TCP and a stunnel4 pair across the same nodes, in the same run, and
// logs the comparison as a table (docs/performance.md).
//
// Direct TCP goes from pod a (its socket marked so the in-pod rules let it
// pass) to a server in node b's namespace: pod b's rules would redirect it to
// ztunnel. stunnel4 runs as a client in node a and a server in node b with
// TLS 1.3 between, forwarding to the same node b servers; pod a reaches the
// client stunnel the same marked way.
func BenchmarkPrivilegedZtunnel(b *testing.B) {
	privtest.Require(b)
	stunnel, err := exec.LookPath("stunnel4")
	if err != nil {
		b.Fatalf("stunnel4 is needed for the comparison and is not installed (apt-get install -y stunnel4): %v", err)
	}
	checkFileLimit(b)
	if NewBenchTelemetry == nil {
		b.Fatal("NewBenchTelemetry is not set: bench_telemetry_ext_test.go is missing from the test binary")
	}
	benchTelemetry = NewBenchTelemetry
	defer func() { benchTelemetry = nil }()
	tp := newTopology(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	ca := hbonetest.NewCA(b, "cluster.local")
	hpa, hpb, hnb := tp.handle(b, "pa"), tp.handle(b, "pb"), tp.handle(b, "nb")
	b.Cleanup(func() { hpa.Close(); hpb.Close(); hnb.Close() })
	za := startZtunnel(b, ctx, ca, Pod{UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a",
		Sockets: NewNetnsSockets(tp.handle(b, "pa"), DefaultMark)})
	zb := startZtunnel(b, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(b, "pb"), DefaultMark)})
	configure(za, zb)
	echoServer(b, ctx, hpb, "8080")
	echoServer(b, ctx, hnb, "9000")
	sinkServer(b, ctx, hpb, "8081")
	sinkServer(b, ctx, hnb, "9001")
	st := startStunnelPair(b, stunnel, tp)
	startRelayPair(b, ctx, tp)
	podFloor := startInPodRelayPair(b, ctx, tp)
	tlsFloor := startInPodTLSRelayPair(b, ctx, tp, ca)

	marked := netns.SocketOptions{Mark: DefaultMark}
	paths := []benchPath{
		{name: "direct TCP", echo: "192.168.77.2:9000", sink: "192.168.77.2:9001", opts: marked},
		{name: "ztunnel x2", echo: "10.77.2.2:8080", sink: "10.77.2.2:8081"},
		{name: "stunnel4 x2", echo: "10.77.1.1:19000", sink: "10.77.1.1:19001", opts: marked, pids: st.pids},
		{name: "TCP relay x2", echo: "10.77.1.1:19100", sink: "10.77.1.1:19101", opts: marked, floor: true},
		{name: "in-pod relay x2", echo: "10.77.4.2:8080", sink: "10.77.4.2:8081", floor: true, from: podFloor},
		{name: "in-pod TLS relay x2", echo: "10.77.6.2:8080", sink: "10.77.6.2:8081", floor: true, persistentOnly: true, from: tlsFloor},
	}
	client := newNsDialer(b, hpa)
	if err := waitEcho(client, paths[2]); err != nil {
		b.Fatalf("stunnel4 pair did not come up: %v\n%s", err, st.log())
	}
	for _, p := range slices.Concat(paths[:2], paths[3:]) {
		if err := waitEcho(client, p); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}

	res := make([]benchResult, len(paths))
	b.Run("throughput", func(b *testing.B) {
		rates := make([][]float64, len(paths))
		for range benchRounds {
			for i, p := range paths {
				r, err := throughput(client, p)
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				rates[i] = append(rates[i], r)
			}
		}
		for i, p := range paths {
			res[i].mbps = median(rates[i])
			b.ReportMetric(res[i].mbps, metricName(p.name, "MB/s"))
		}
		b.ReportMetric(res[1].mbps/res[0].mbps, "ztunnel/direct")
		b.ReportMetric(res[1].mbps/res[2].mbps, "ztunnel/stunnel4")
		b.ReportMetric(res[1].mbps/res[3].mbps, "ztunnel/relay")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("latency-persistent", func(b *testing.B) {
		for i, p := range paths {
			l, err := persistentLatency(client, p)
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			res[i].persistent = l
			b.ReportMetric(us(l.p50), metricName(p.name, "p50-us"))
			b.ReportMetric(us(l.p99), metricName(p.name, "p99-us"))
		}
		b.ReportMetric(us(res[1].persistent.p50-res[0].persistent.p50), "ztunnel-added-p50-us")
		b.ReportMetric(us(res[1].persistent.p99-res[0].persistent.p99), "ztunnel-added-p99-us")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("latency-new-conn", func(b *testing.B) {
		// stunnel4 last: it cannot keep up, and the backlog it is left
		// with would load the machine under the next path.
		for _, i := range []int{0, 1, 3, 4, 5, 2} {
			p := paths[i]
			if p.persistentOnly {
				continue
			}
			l := newConnLatency(client, p)
			res[i].newConn = l
			b.ReportMetric(us(l.p50), metricName(p.name, "p50-us"))
			b.ReportMetric(us(l.p99), metricName(p.name, "p99-us"))
			b.ReportMetric(float64(l.failed), metricName(p.name, "failed"))
			if l.failed > 0 {
				b.Logf("%s: %d of %d new connections failed, the first: %v", p.name, l.failed, benchRequests, l.firstErr)
			}
		}
		b.ReportMetric(0, "ns/op")
	})
	b.Run("idle-conns", func(b *testing.B) {
		for i, p := range paths {
			if p.floor {
				continue
			}
			m, err := idleMemory(client, p)
			if err != nil {
				b.Logf("%s: %v", p.name, err)
			}
			res[i].idle = m
			b.ReportMetric(float64(m.rss)/(1<<20), metricName(p.name, "RSS-MiB"))
		}
		b.ReportMetric(0, "ns/op")
	})
	// Printed, not logged: benchmark logs of a parent are shown only with -v.
	fmt.Print("\nztunnel benchmark, pod a -> pod b (docs/performance.md)\n" + table(paths, res))
}

type latency struct {
	p50, p99  time.Duration
	n, failed int
	rate      float64 // achieved requests per second
	cpu       float64 // CPU seconds per second of the run, this process + tunnel processes
	firstErr  error
}

type idle struct {
	conns      int
	rss        int64 // resident memory added, bytes
	goroutines int   // goroutines added in this process
}

type benchResult struct {
	mbps                float64
	persistent, newConn latency
	idle                idle
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func metricName(path, unit string) string {
	return strings.NewReplacer(" ", "", "x2", "").Replace(path) + "-" + unit
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func table(paths []benchPath, res []benchResult) string {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\t"+strings.Join(names(paths), "\t")+"\t")
	row := func(label string, f func(r benchResult) string) {
		cells := []string{label}
		for _, r := range res {
			cells = append(cells, f(r))
		}
		fmt.Fprintln(w, strings.Join(cells, "\t")+"\t")
	}
	d, z := res[0], res[1]
	row("throughput MB/s", func(r benchResult) string { return fmt.Sprintf("%.0f (%.2fx direct)", r.mbps, r.mbps/d.mbps) })
	row("persistent 1KB p50 us", func(r benchResult) string {
		return fmt.Sprintf("%.0f (+%.0f)", us(r.persistent.p50), us(r.persistent.p50-d.persistent.p50))
	})
	row("persistent 1KB p99 us", func(r benchResult) string {
		return fmt.Sprintf("%.0f (+%.0f)", us(r.persistent.p99), us(r.persistent.p99-d.persistent.p99))
	})
	row("persistent CPU % of a core", func(r benchResult) string { return fmt.Sprintf("%.1f", 100*r.persistent.cpu) })
	// newConn formats a new-connection figure, "-" for a path not measured so.
	newConn := func(f func(l latency) string) func(benchResult) string {
		return func(r benchResult) string {
			if r.newConn.n+r.newConn.failed == 0 {
				return "-"
			}
			return f(r.newConn)
		}
	}
	row("new conn 1KB p50 us", newConn(func(l latency) string { return fmt.Sprintf("%.0f", us(l.p50)) }))
	row("new conn 1KB p99 us", newConn(func(l latency) string { return fmt.Sprintf("%.0f", us(l.p99)) }))
	row("new conn achieved /s, failed", newConn(func(l latency) string { return fmt.Sprintf("%.0f, %d", l.rate, l.failed) }))
	row("new conn CPU % of a core", newConn(func(l latency) string { return fmt.Sprintf("%.1f", 100*l.cpu) }))
	row("idle conns: n, RSS MiB, KiB/conn", func(r benchResult) string {
		if r.idle.conns == 0 {
			return "-"
		}
		return fmt.Sprintf("%d, %.1f, %.1f", r.idle.conns, float64(r.idle.rss)/(1<<20), float64(r.idle.rss)/1024/float64(max(1, r.idle.conns)))
	})
	row("idle goroutines/conn (this process)", func(r benchResult) string {
		if r.idle.conns == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(r.idle.goroutines)/float64(max(1, r.idle.conns)))
	})
	w.Flush()
	fmt.Fprintf(&sb, "ztunnel vs stunnel4 throughput: %.2fx; vs the plain relay pairs (floors of two hops): %.2fx at the nodes, %.2fx in the pods; vs the in-pod TLS relay pair: %.2fx; ztunnel CPU per 1,000 req/s (both ztunnels, persistent): %.1f%% of a core\n",
		z.mbps/res[2].mbps, z.mbps/res[3].mbps, z.mbps/res[4].mbps, z.mbps/res[5].mbps, 100*(z.persistent.cpu-d.persistent.cpu))
	return sb.String()
}

func names(paths []benchPath) []string {
	var n []string
	for _, p := range paths {
		n = append(n, p.name)
	}
	return n
}

// checkFileLimit fails early if the idle-connection figure cannot be measured:
// each tunneled connection holds four descriptors in this process (client,
// both ztunnels, server).
func checkFileLimit(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if need := uint64(4*benchIdleConns + 1000); lim.Cur < need {
		b.Fatalf("open file limit %d, %d idle connections need %d", lim.Cur, benchIdleConns, need)
	}
}

// sinkServer serves the throughput protocol on port inside h: an 8-byte
// length, that many bytes, then a one-byte acknowledgement. It does not rely
// on half-close, which stunnel4 handles its own way.
func sinkServer(t testing.TB, ctx context.Context, h *netns.Handle, port string) {
	ln, err := h.Listen(ctx, ":"+port, netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				var hdr [8]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				buf := make([]byte, 256<<10)
				for left := int64(binary.BigEndian.Uint64(hdr[:])); left > 0; {
					n, err := c.Read(buf[:min(int64(len(buf)), left)])
					left -= int64(n)
					if err != nil {
						return
					}
				}
				_, _ = c.Write([]byte{1})
			})
		}
	})
}

// nsDialer dials from threads that stay in one network namespace, so that the
// client does not pay two setns calls and a locked thread per connection (the
// new-connection mode would measure that instead of the path).
type nsDialer struct {
	reqs chan dialReq
}

type dialReq struct {
	addr  string
	opts  netns.SocketOptions
	reply chan dialReply
}

type dialReply struct {
	c   net.Conn
	err error
}

func newNsDialer(t testing.TB, h *netns.Handle) *nsDialer {
	d := &nsDialer{reqs: make(chan dialReq)}
	var wg sync.WaitGroup
	for range benchDialers {
		entered := make(chan error, 1)
		wg.Go(func() {
			// Never unlocked: the runtime ends the thread with the goroutine
			// instead of reusing it in pod a's namespace.
			runtime.LockOSThread()
			if err := unix.Setns(int(h.Fd()), unix.CLONE_NEWNET); err != nil {
				entered <- err
				return
			}
			entered <- nil
			for r := range d.reqs {
				ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
				nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					err := rc.Control(func(fd uintptr) {
						if r.opts.Mark != 0 {
							serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(r.opts.Mark))
						}
					})
					return errors.Join(err, serr)
				}}
				c, err := nd.DialContext(ctx, "tcp", r.addr)
				cancel()
				r.reply <- dialReply{c, err}
			}
		})
		if err := <-entered; err != nil {
			t.Fatalf("enter client namespace: %v", err)
		}
	}
	t.Cleanup(func() { close(d.reqs); wg.Wait() })
	return d
}

func (d *nsDialer) dial(addr string, o netns.SocketOptions) (net.Conn, error) {
	reply := make(chan dialReply, 1)
	d.reqs <- dialReq{addr: addr, opts: o, reply: reply}
	r := <-reply
	return r.c, r.err
}

func dialPath(h *nsDialer, addr string, o netns.SocketOptions) (net.Conn, error) {
	return h.dial(addr, o)
}

// roundTrip sends one request of buf's size and reads the echo into buf.
func roundTrip(c net.Conn, buf []byte) error {
	if _, err := c.Write(buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

func waitEcho(h *nsDialer, p benchPath) error {
	h = p.client(h)
	deadline := time.Now().Add(benchSetup)
	for {
		c, err := dialPath(h, p.echo, p.opts)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(benchTimeout))
			err = roundTrip(c, make([]byte, benchMsg))
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// throughput sends benchVolume bytes on one connection and returns MB/s,
// timed until the sink has all of it.
func throughput(h *nsDialer, p benchPath) (float64, error) {
	h = p.client(h)
	c, err := dialPath(h, p.sink, p.opts)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	start := time.Now()
	binary.BigEndian.PutUint64(buf, benchVolume)
	if _, err := c.Write(buf[:8]); err != nil {
		return 0, err
	}
	for sent := 0; sent < benchVolume; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return 0, fmt.Errorf("acknowledgement: %w", err)
	}
	return benchVolume / 1e6 / time.Since(start).Seconds(), nil
}

// cpuClock is the CPU time used so far by this process and pids.
func cpuClock(pids []int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		t += procCPU(pid)
	}
	return t
}

// procCPU reads utime+stime of pid from /proc (clock ticks, 100 Hz on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func pidsOf(p benchPath) []int {
	if p.pids == nil {
		return nil
	}
	return p.pids()
}

// persistentLatency sends benchRequests 1 KB requests at benchRate on one
// connection.
func persistentLatency(h *nsDialer, p benchPath) (latency, error) {
	h = p.client(h)
	c, err := dialPath(h, p.echo, p.opts)
	if err != nil {
		return latency{}, err
	}
	defer c.Close()
	buf := make([]byte, benchMsg)
	if err := roundTrip(c, buf); err != nil { // warm up
		return latency{}, err
	}
	lat := make([]time.Duration, 0, benchRequests)
	interval := time.Second / benchRate
	cpu0 := cpuClock(pidsOf(p))
	start := time.Now()
	for i := range benchRequests {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		t0 := time.Now()
		if err := roundTrip(c, buf); err != nil {
			return latency{}, err
		}
		lat = append(lat, time.Since(t0))
	}
	wall := time.Since(start)
	cpu := cpuClock(pidsOf(p)) - cpu0
	return latency{p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), n: len(lat),
		rate: float64(len(lat)) / wall.Seconds(), cpu: cpu.Seconds() / wall.Seconds()}, nil
}

// newConnLatency opens a new connection per 1 KB request, at benchRate new
// connections a second whether or not earlier ones have finished (open loop),
// timing each from its scheduled start. Failures are counted, not fatal:
// a path that cannot sustain the rate is a result.
func newConnLatency(h *nsDialer, p benchPath) latency {
	h = p.client(h)
	var (
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, benchRequests)
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	interval := time.Second / benchRate
	cpu0 := cpuClock(pidsOf(p))
	start := time.Now()
	for i := range benchRequests {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Go(func() {
			err := func() error {
				c, err := dialPath(h, p.echo, p.opts)
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.SetDeadline(at.Add(benchTimeout)); err != nil {
					return err
				}
				return roundTrip(c, make([]byte, benchMsg))
			}()
			d := time.Since(at)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if failed == 0 {
					firstErr = err
				}
				failed++
				return
			}
			lat = append(lat, d)
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuClock(pidsOf(p)) - cpu0
	return latency{p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), n: len(lat), failed: failed, firstErr: firstErr,
		rate: float64(len(lat)) / wall.Seconds(), cpu: cpu.Seconds() / wall.Seconds()}
}

// idleMemory opens benchIdleConns connections, each with one round trip, and
// returns the resident memory they add to this process (client, servers and
// ztunnels) plus the tunnel processes. The direct path's figure is the
// baseline of the client and servers.
func idleMemory(h *nsDialer, p benchPath) (idle, error) {
	h = p.client(h)
	before, g0 := rss(pidsOf(p)), runtime.NumGoroutine()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 1)
	var err error
	for range benchIdleConns {
		var c net.Conn
		if c, err = dialPath(h, p.echo, p.opts); err != nil {
			break
		}
		conns = append(conns, c)
		if err = c.SetDeadline(time.Now().Add(benchTimeout)); err != nil {
			break
		}
		if err = roundTrip(c, buf); err != nil {
			break
		}
	}
	if err != nil {
		err = fmt.Errorf("after %d idle connections: %w", len(conns), err)
	}
	// Relays give up their goroutines once idle for hbone.IdleLinger (1 s;
	// 2 s at most): measure idle connections, not just-used ones.
	time.Sleep(2500 * time.Millisecond)
	return idle{conns: len(conns), rss: rss(pidsOf(p)) - before, goroutines: runtime.NumGoroutine() - g0}, err
}

// rss is the resident memory of this process after a collection, plus pids'.
func rss(pids []int) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	n := procRSS(os.Getpid())
	for _, pid := range pids {
		n += procRSS(pid)
	}
	return n
}

func procRSS(pid int) int64 { return procStatus(pid)["VmRSS"] }

// procStatus returns the numbers of /proc/PID/status by name, sizes in
// bytes.
func procStatus(pid int) map[string]int64 {
	m := map[string]int64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		v, kb := strings.CutSuffix(strings.TrimSpace(v), " kB")
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
		case kb:
			m[k] = n << 10
		default:
			m[k] = n
		}
	}
	return m
}

// stunnelPair is a client stunnel4 in node a and a server stunnel4 in node b.
type stunnelPair struct {
	procs []*exec.Cmd
	logs  []*os.File
}

func (s *stunnelPair) pids() []int {
	var p []int
	for _, c := range s.procs {
		p = append(p, c.Process.Pid)
	}
	return p
}

func (s *stunnelPair) log() string {
	var sb strings.Builder
	for _, f := range s.logs {
		b, _ := os.ReadFile(f.Name())
		sb.Write(b)
	}
	return sb.String()
}

// startStunnelPair starts stunnel4 as a TLS client in node a (listening on
// 19000 -> echo, 19001 -> sink) and a TLS server in node b (19443 ->
// 127.0.0.1:9000, 19444 -> 127.0.0.1:9001), with a certificate made here.
// Both are killed by pid at cleanup.
func startStunnelPair(b *testing.B, bin string, tp *topology) *stunnelPair {
	dir := b.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(b, cert, key)
	common := "foreground = yes\npid =\ndebug = 4\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\nsslVersionMin = TLSv1.3\n"
	client := common + "client = yes\nverifyPeer = yes\nCAfile = " + cert + "\n" +
		"[echo]\naccept = 0.0.0.0:19000\nconnect = 192.168.77.2:19443\n" +
		"[sink]\naccept = 0.0.0.0:19001\nconnect = 192.168.77.2:19444\n"
	server := common + "cert = " + cert + "\nkey = " + key + "\n" +
		"[echo]\naccept = 192.168.77.2:19443\nconnect = 127.0.0.1:9000\n" +
		"[sink]\naccept = 192.168.77.2:19444\nconnect = 127.0.0.1:9001\n"
	s := &stunnelPair{}
	for _, side := range []struct{ ns, name, conf string }{{tp.ns("nb"), "server", server}, {tp.ns("na"), "client", client}} {
		conf := filepath.Join(dir, side.name+".conf")
		if err := os.WriteFile(conf, []byte(side.conf), 0o600); err != nil {
			b.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(dir, side.name+".log"))
		if err != nil {
			b.Fatal(err)
		}
		// ip netns exec execs stunnel4 in place: the pid is stunnel's.
		cmd := exec.Command("ip", "netns", "exec", side.ns, bin, conf)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatalf("start stunnel4 %s: %v", side.name, err)
		}
		s.procs = append(s.procs, cmd)
		s.logs = append(s.logs, logf)
		b.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
		})
	}
	return s
}

func writeSelfSigned(b *testing.B, certPath, keyPath string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "stunnel-bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.ParseIP("192.168.77.2")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	err = errors.Join(
		os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600),
		os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	if err != nil {
		b.Fatal(err)
	}
}
