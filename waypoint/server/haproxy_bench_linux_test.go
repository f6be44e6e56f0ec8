package server_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Knobs of BenchmarkHTTP1VersusHAProxy: fixed amounts of work rather than
// b.N, so that each figure compares paths measured the same way in one run.
const (
	haproxyClients  = 16                    // concurrent keep-alive clients at saturation
	haproxySaturate = 2 * time.Second       // per path
	haproxyRate     = 1000                  // req/s, open loop
	haproxyRateFor  = 2 * time.Second       // per path
	haproxyTimeout  = 2 * time.Second       // per request
	haproxyTick     = 10 * time.Millisecond // clock ticks of /proc/<pid>/stat (USER_HZ)
)

// BenchmarkHTTP1VersusHAProxy compares 1 KiB HTTP/1.1 exchanges on
// loopback along three paths to the same backend, in one run: direct;
// through HAProxy (Debian's haproxy, mode http, keep-alive both sides);
// through the waypoint over real HBONE in and out (the setup of
// BenchmarkHTTP1Through1KB, so two TLS hops HAProxy does not have). For
// each: req/s and p99 with haproxyClients closed-loop clients, p50/p99 at
// haproxyRate req/s open loop, and CPU at that rate (this process, which
// holds clients, backend, waypoint and fake ztunnels, plus haproxy).
func BenchmarkHTTP1VersusHAProxy(b *testing.B) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		b.Fatalf("haproxy not found (Debian: apt-get install -y haproxy): %v", err)
	}
	m, p := newEchoMesh(b)
	backend := netip.AddrPortFrom(p.ip, p.appPort)
	hp := startHAProxy(b, haproxy, backend)

	paths := []struct {
		name string
		c    *http.Client
		url  string
		pid  int // another process whose CPU counts, or 0
	}{
		{"direct", plainClient(b), "http://" + backend.String() + "/", 0},
		{"haproxy", plainClient(b), "http://" + hp.addr + "/", hp.pid},
		{"waypoint", m.httpClient(vip(1), false), "http://echo/", 0},
	}
	for _, p := range paths { // warm up: open the keep-alive connections
		if _, err := saturate(p.c, p.url, 200*time.Millisecond); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}
	b.ResetTimer()
	sat := map[string]float64{}
	for _, p := range paths {
		r, err := saturate(p.c, p.url, haproxySaturate)
		if err != nil {
			b.Fatalf("%s at saturation: %v", p.name, err)
		}
		sat[p.name] = r.rate
		b.ReportMetric(r.rate, p.name+"-req/s")
		b.ReportMetric(us(r.p99), p.name+"-sat-p99-us")
	}
	for _, p := range paths {
		cpu0 := cpuTime(b, p.pid)
		r, err := fixedRate(p.c, p.url, haproxyRate, haproxyRateFor)
		if err != nil {
			b.Fatalf("%s at %d req/s: %v", p.name, haproxyRate, err)
		}
		cpu := cpuTime(b, p.pid) - cpu0
		b.ReportMetric(us(r.p50), p.name+"-p50-us")
		b.ReportMetric(us(r.p99), p.name+"-p99-us")
		// % of a core per 1,000 req/s.
		b.ReportMetric(100*cpu.Seconds()/r.elapsed.Seconds()/(r.rate/1000), p.name+"-CPU%/1k-req/s")
	}
	b.ReportMetric(sat["waypoint"]/sat["haproxy"], "waypoint/haproxy")
	b.ReportMetric(0, "ns/op")
}

type haproxyProc struct {
	addr string
	pid  int
}

// startHAProxy runs haproxy in the foreground, proxying to backend, and
// kills it at cleanup.
func startHAProxy(b *testing.B, bin string, backend netip.AddrPort) haproxyProc {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // haproxy binds it next; a race with another binder fails loudly below
	dir := b.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	conf := fmt.Sprintf(`global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend fe
    bind %s
    default_backend be
backend be
    server echo %s
`, addr, backend)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b.Fatalf("haproxy exited: %s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("haproxy not listening on %s: %v", addr, err)
		}
	}
	return haproxyProc{addr: addr, pid: cmd.Process.Pid}
}

// plainClient is an HTTP/1.1 keep-alive client for haproxyClients
// concurrent requests.
func plainClient(b *testing.B) *http.Client {
	var protos http.Protocols
	protos.SetHTTP1(true)
	tr := &http.Transport{Protocols: &protos, MaxIdleConnsPerHost: haproxyClients}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: haproxyTimeout}
}

type loadResult struct {
	rate     float64 // completed req/s
	p50, p99 time.Duration
	elapsed  time.Duration
}

// saturate runs haproxyClients closed-loop clients for d.
func saturate(c *http.Client, url string, d time.Duration) (loadResult, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lats []time.Duration
		errs []error
	)
	start := time.Now()
	end := start.Add(d)
	for range haproxyClients {
		wg.Go(func() {
			var mine []time.Duration
			for t := time.Now(); t.Before(end); t = time.Now() {
				if err := post1KB(c, url); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return summarize(lats, time.Since(start)), errors.Join(errs...)
}

// fixedRate sends rate req/s for d, open loop (a slow request does not
// delay the next). Each request is timed from when it is sent, not from its
// scheduled start: time.Sleep wakes about 0.5 ms late on these machines,
// which would add that to every path.
func fixedRate(c *http.Client, url string, rate int, d time.Duration) (loadResult, error) {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	lats := make([]time.Duration, n)
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		first  atomic.Pointer[error]
	)
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Go(func() {
			sent := time.Now()
			if err := post1KB(c, url); err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, &err)
			}
			lats[i] = time.Since(sent)
		})
	}
	wg.Wait()
	r := summarize(lats, time.Since(start))
	if f := failed.Load(); f > 0 {
		return r, fmt.Errorf("%d of %d failed, first: %w", f, n, *first.Load())
	}
	return r, nil
}

func summarize(lats []time.Duration, elapsed time.Duration) loadResult {
	slices.Sort(lats)
	r := loadResult{rate: float64(len(lats)) / elapsed.Seconds(), elapsed: elapsed}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
		r.p99 = lats[len(lats)*99/100]
	}
	return r
}

// cpuTime is the user+system CPU of this process, plus that of pid if not
// 0.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid == 0 {
		return t
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the ")" closing the command name: state is the first,
	// utime and stime the 12th and 13th.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	for _, s := range f[11:13] {
		ticks, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		t += time.Duration(ticks) * haproxyTick
	}
	return t
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
