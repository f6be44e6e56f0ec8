package server_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Knobs of BenchmarkHTTP1VersusHAProxy: fixed amounts of work rather than
// b.N, so that each figure compares paths measured the same way in one run.
const (
	haproxyWarmUp   = 200 * time.Millisecond // opens the keep-alive connections
	haproxyRounds   = 2                      // turns each path takes in each phase
	haproxySaturate = 2 * time.Second        // closed loop, per path
	haproxyP99Bound = 5 * time.Millisecond   // the p99 the highest rate must keep
	haproxyP99Step  = time.Second            // per rate tried
	haproxyP99Steps = 5                      // bisection steps below the saturation rate
	haproxyRate     = 1000                   // req/s, open loop
	haproxyRateFor  = 4 * time.Second        // per path
)

const mib = 1 << 20 // bytes

// benchPath is one way from the client to the 1 KiB backend.
type benchPath struct {
	name  string
	c     *http.Client
	url   string
	proxy *proc         // the proxy's own process; nil for direct
	wp    *waypointProc // the waypoint's, for its metrics; nil for the others
}

// pathResult is what BenchmarkHTTP1VersusHAProxy measures of one path.
type pathResult struct {
	sat                 loadResult // closed loop, loadClients clients
	withinP99           float64    // req/s
	fixed               loadResult // at haproxyRate
	cpuUser, cpuSys     float64    // proxy process: % of a core per 1,000 req/s at haproxyRate
	cpuAll              float64    // everything, the same way
	switches            float64    // proxy process: context switches per request at haproxyRate
	rssIdle, rss, peak  float64    // proxy process, bytes
	heapInuse, heapIdle float64    // waypoint only: Go heap after the run
}

// BenchmarkHTTP1VersusHAProxy compares 1 KiB HTTP/1.1 exchanges on
// loopback along four paths to the same backend handler, in one run:
//
//   - direct: client -> backend, plaintext.
//   - haproxy: client -> haproxy -> backend, plaintext (mode http,
//     keep-alive both sides).
//   - haproxy-tls: the same with mutual TLS 1.3 on both sides (bind ... ssl
//     verify required; server ... ssl verify required crt), to a TLS
//     backend.
//   - waypoint: client -> HBONE (mTLS 1.3, HTTP/2 CONNECT) -> cmd/waypoint
//     -> HBONE -> fake ztunnel -> backend.
//
// Both proxies are child processes (Debian's haproxy; cmd/waypoint built
// by the benchmark, static mode), so their CPU (/proc/PID/stat) and memory
// (VmRSS, VmHWM of /proc/PID/status) are their own. This process holds the
// clients, the backends and, for the waypoint, the client-side tunnel and
// the fake ztunnel. For each path: req/s and p99 with loadClients
// closed-loop clients; the highest open-loop rate whose p99 stays within
// haproxyP99Bound; p50/p99 at haproxyRate req/s, and CPU and context
// switches at that rate. Each phase takes the paths in turns, so that load
// from elsewhere on the machine does not fall on one path only.
func BenchmarkHTTP1VersusHAProxy(b *testing.B) {
	paths := newComparedPaths(b)
	res := make([]pathResult, len(paths))
	for i, p := range paths {
		if p.proxy != nil {
			res[i].rssIdle, _ = procMemory(b, p.proxy.pid)
		}
	}
	for _, p := range paths {
		if _, err := saturate(p.c, p.url, haproxyWarmUp); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}
	b.ResetTimer()
	measureSaturation(b, paths, res)
	measureWithinP99(paths, res)
	measureFixedRate(b, paths, res)
	b.StopTimer()
	for i, p := range paths {
		if p.proxy != nil {
			res[i].rss, res[i].peak = procMemory(b, p.proxy.pid)
		}
		if p.wp != nil {
			res[i].heapInuse = p.wp.metric(b, "go_memstats_heap_inuse_bytes")
			res[i].heapIdle = p.wp.metric(b, "go_memstats_heap_idle_bytes")
		}
	}
	report(b, paths, res)
}

// newComparedPaths starts the backends, both haproxy configurations and
// the waypoint process, and returns the four paths (the waypoint's last;
// then the baseline waypoint's, if baselineWaypointEnv names one).
func newComparedPaths(b *testing.B) []benchPath {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		b.Fatalf("haproxy not found (Debian: apt-get install -y haproxy): %v", err)
	}
	m, p := newEchoMesh(b)
	backend := netip.AddrPortFrom(p.ip, p.appPort)
	ca := newPKI(b)
	_, feFile := ca.issue("haproxy.test")
	clientCert, _ := ca.issue("client.test")
	beCert, _ := ca.issue("backend.test")
	_, hpClientFile := ca.issue("haproxy-client.test")
	tlsBackend := startTLSBackend(b, ca, beCert)

	hp := startHAProxy(b, haproxy, "haproxy", fmt.Sprintf(`
frontend fe
    bind %%s
    default_backend be
backend be
    server echo %s
`, backend))
	hpTLS := startHAProxy(b, haproxy, "haproxy-tls", fmt.Sprintf(`
frontend fe
    bind %%s ssl crt %s ca-file %s verify required alpn http/1.1
    default_backend be
backend be
    server echo %s ssl crt %s ca-file %s verify required verifyhost backend.test sni str(backend.test) alpn http/1.1
`, feFile, ca.caFile(), tlsBackend, hpClientFile, ca.caFile()))
	wp := startWaypointProc(b, m, echoSnapshot(p))
	paths := []benchPath{
		{"direct", plainClient(b), "http://" + backend.String() + "/", nil, nil},
		{"haproxy", plainClient(b), "http://" + hp.addr.String() + "/", &hp.proc, nil},
		{"haproxy-tls", tlsClient(b, ca, clientCert, "haproxy.test"), "https://" + hpTLS.addr.String() + "/", &hpTLS.proc, nil},
		{"waypoint", m.httpClientVia(wp.hbone, vip(1), false), "http://echo/", &wp.proc, &wp},
	}
	if bin := os.Getenv(baselineWaypointEnv); bin != "" {
		base := runWaypointProc(b, m, echoSnapshot(p), "waypoint-baseline", bin)
		paths = append(paths, benchPath{"waypoint-baseline", m.httpClientVia(base.hbone, vip(1), false), "http://echo/", &base.proc, &base})
	}
	return paths
}

// baselineWaypointEnv names a waypoint binary (cmd/waypoint built from
// another commit) that BenchmarkHTTP1VersusHAProxy then measures as a fifth
// path, in the same turns, so that a change is compared with what it
// changes in one run.
const baselineWaypointEnv = "AMBIT_BENCH_WAYPOINT_BASELINE"

// measureSaturation runs loadClients closed-loop clients on each path.
func measureSaturation(b *testing.B, paths []benchPath, res []pathResult) {
	for range haproxyRounds {
		for i, p := range paths {
			r, err := saturate(p.c, p.url, haproxySaturate/haproxyRounds)
			if err != nil {
				b.Fatalf("%s at saturation: %v", p.name, err)
			}
			res[i].sat = res[i].sat.merge(r)
		}
	}
}

// measureWithinP99 searches each path's highest rate within
// haproxyP99Bound below its saturation rate, one step of each in turn.
func measureWithinP99(paths []benchPath, res []pathResult) {
	searches := make([]*p99Search, len(paths))
	for i := range paths {
		searches[i] = newP99Search(haproxyP99Bound, res[i].sat.rate, haproxyP99Step, haproxyP99Steps)
	}
	for searching := true; searching; {
		searching = false
		for i, p := range paths {
			if rate, ok := searches[i].next(); ok {
				searches[i].try(p.c, p.url, rate)
				searching = true
			}
		}
	}
	for i := range paths {
		res[i].withinP99 = searches[i].best
	}
}

// measureFixedRate runs each path at haproxyRate req/s and measures the
// CPU and context switches that costs.
func measureFixedRate(b *testing.B, paths []benchPath, res []pathResult) {
	type tally struct{ self, user, sys time.Duration }
	tallies := make([]tally, len(paths))
	for range haproxyRounds {
		for i, p := range paths {
			self0 := selfCPU(b)
			var user0, sys0 time.Duration
			var sw0 float64
			if p.proxy != nil {
				user0, sys0 = procCPU(b, p.proxy.pid)
				sw0 = procSwitches(b, p.proxy.pid)
			}
			r, err := fixedRate(p.c, p.url, haproxyRate, haproxyRateFor/haproxyRounds)
			if err != nil {
				b.Fatalf("%s at %d req/s: %v", p.name, haproxyRate, err)
			}
			tallies[i].self += selfCPU(b) - self0
			if p.proxy != nil {
				user, sys := procCPU(b, p.proxy.pid)
				tallies[i].user += user - user0
				tallies[i].sys += sys - sys0
				res[i].switches += procSwitches(b, p.proxy.pid) - sw0
			}
			res[i].fixed = res[i].fixed.merge(r)
		}
	}
	for i, t := range tallies {
		r := &res[i]
		n := float64(len(r.fixed.lats))
		perK := func(d time.Duration) float64 { return 100 * d.Seconds() * 1000 / n } // % of a core per 1,000 req/s
		r.cpuUser, r.cpuSys, r.cpuAll, r.switches = perK(t.user), perK(t.sys), perK(t.self+t.user+t.sys), r.switches/n
	}
}

// report gives the main figures to the benchmark and prints the whole
// table (not with b.Log: benchmark logs are cut to ten lines).
func report(b *testing.B, paths []benchPath, res []pathResult) {
	within := map[string]float64{}
	for i, p := range paths {
		r := res[i]
		within[p.name] = r.withinP99
		b.ReportMetric(r.sat.rate, p.name+"-req/s")
		b.ReportMetric(r.withinP99, p.name+"-req/s-p99<5ms")
		b.ReportMetric(us(r.fixed.p99), p.name+"-p99-us")
		if p.proxy != nil {
			b.ReportMetric(r.cpuUser+r.cpuSys, p.name+"-CPU%/1k-req/s")
			b.ReportMetric(r.rss/mib, p.name+"-RSS-MiB")
		}
	}
	if within["haproxy-tls"] > 0 {
		b.ReportMetric(within["waypoint"]/within["haproxy-tls"], "waypoint/haproxy-tls")
	}
	if within["waypoint-baseline"] > 0 {
		b.ReportMetric(within["waypoint"]/within["waypoint-baseline"], "waypoint/baseline")
	}
	b.ReportMetric(0, "ns/op")
	fmt.Fprint(os.Stdout, resultTable(paths, res))
}

// resultTable renders the results as the Markdown table of
// docs/performance.md.
func resultTable(paths []benchPath, res []pathResult) string {
	var sb strings.Builder
	row := func(label string, f func(p benchPath, r pathResult) string) {
		sb.WriteString("| " + label + " |")
		for i, p := range paths {
			sb.WriteString(" " + f(p, res[i]) + " |")
		}
		sb.WriteString("\n")
	}
	proxyOnly := func(f func(r pathResult) string) func(benchPath, pathResult) string {
		return func(p benchPath, r pathResult) string {
			if p.proxy == nil {
				return "-"
			}
			return f(r)
		}
	}
	row("", func(p benchPath, _ pathResult) string { return p.name })
	row("---", func(benchPath, pathResult) string { return "---" })
	row(fmt.Sprintf("req/s, %d closed-loop clients", loadClients), func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.0f", r.sat.rate) })
	row("p99 at that saturation", func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.1f ms", r.sat.p99.Seconds()*1000) })
	row(fmt.Sprintf("req/s with p99 <= %v", haproxyP99Bound), func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.0f", r.withinP99) })
	row(fmt.Sprintf("p50 at %d req/s", haproxyRate), func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.0f us", us(r.fixed.p50)) })
	row(fmt.Sprintf("p99 at %d req/s", haproxyRate), func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.0f us", us(r.fixed.p99)) })
	row("CPU per 1,000 req/s, proxy process (user + system)", proxyOnly(func(r pathResult) string {
		return fmt.Sprintf("%.0f%% (%.0f + %.0f)", r.cpuUser+r.cpuSys, r.cpuUser, r.cpuSys)
	}))
	row("context switches per request, proxy process", proxyOnly(func(r pathResult) string { return fmt.Sprintf("%.1f", r.switches) }))
	row("CPU per 1,000 req/s, everything", func(_ benchPath, r pathResult) string { return fmt.Sprintf("%.0f%%", r.cpuAll) })
	row("proxy RSS idle (configured, before traffic)", proxyOnly(func(r pathResult) string { return fmt.Sprintf("%.1f MiB", r.rssIdle/mib) }))
	row("proxy RSS after the run", proxyOnly(func(r pathResult) string { return fmt.Sprintf("%.1f MiB", r.rss/mib) }))
	row("proxy peak RSS (VmHWM)", proxyOnly(func(r pathResult) string { return fmt.Sprintf("%.1f MiB", r.peak/mib) }))
	row("Go heap in use / idle after the run", func(p benchPath, r pathResult) string {
		if r.heapInuse == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f / %.1f MiB", r.heapInuse/mib, r.heapIdle/mib)
	})
	return sb.String()
}

type haproxyProc struct {
	proc
	addr netip.AddrPort
}

// startHAProxy runs haproxy in the foreground with the global and default
// sections shared by every path and the given frontend and backend (whose
// bind address is a %s), and kills it at cleanup. TLS is limited to what
// the mesh uses (TLS 1.3, AES-128-GCM); threads are haproxy's default (one
// per CPU).
func startHAProxy(b *testing.B, bin, name, proxies string) haproxyProc {
	b.Helper()
	addr := freeAddr(b)
	conf := `global
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
` + fmt.Sprintf(proxies, addr)
	cfg := filepath.Join(b.TempDir(), name+".cfg")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	return haproxyProc{startProc(b, name, bin, []string{"-db", "-f", cfg}, dialable(addr.String())), addr}
}

// startTLSBackend serves the 1 KiB echo handler over mutual TLS 1.3 on
// loopback, for haproxy-tls.
func startTLSBackend(b *testing.B, ca *pki, cert tls.Certificate) netip.AddrPort {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		Handler:           echo1KB(),
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.pool,
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"http/1.1"},
		},
	}
	goLabeled(appParty, func() { _ = srv.ServeTLS(ln, "", "") })
	b.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// plainClient is an HTTP/1.1 client on at most loadClients keep-alive
// connections.
func plainClient(b *testing.B) *http.Client {
	var protos http.Protocols
	protos.SetHTTP1(true)
	tr := &http.Transport{Protocols: &protos, MaxIdleConnsPerHost: loadClients, MaxConnsPerHost: loadClients}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: loadTimeout}
}

// tlsClient is plainClient over mutual TLS 1.3 with cert, expecting
// serverName.
func tlsClient(b *testing.B, ca *pki, cert tls.Certificate, serverName string) *http.Client {
	var protos http.Protocols
	protos.SetHTTP1(true)
	tr := &http.Transport{
		Protocols: &protos, MaxIdleConnsPerHost: loadClients, MaxConnsPerHost: loadClients,
		TLSClientConfig: &tls.Config{
			RootCAs: ca.pool, Certificates: []tls.Certificate{cert}, ServerName: serverName,
			MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
		},
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: loadTimeout}
}
