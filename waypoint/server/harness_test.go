package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/proxy"
	"github.com/ambit-mesh/ambit/waypoint/server"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// network places the parties of a mesh: the client with its ztunnel, the
// waypoint, and each pod (its app and its fake ztunnel). Every mesh test
// runs on two: loopback (TestMeshOnLoopback, no root) and one network
// namespace per party (TestPrivilegedMeshAcrossNetworkNamespaces).
type network interface {
	// host makes a place for the party called name.
	host(t testing.TB, name string) *host
}

// host is where a party runs: its address, and how to open sockets there.
type host struct {
	name   string
	ip     netip.Addr
	listen func(ctx context.Context, addr string) (net.Listener, error)
	dial   func(ctx context.Context, addr string) (net.Conn, error)
}

// loopback gives every party its own 127.0.0.x in this process's network
// namespace.
type loopback struct {
	mu   sync.Mutex
	next byte
}

func newLoopback() *loopback { return &loopback{next: 10} }

func (l *loopback) host(t testing.TB, name string) *host {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == 254 {
		t.Fatal("loopback: out of addresses")
	}
	l.next++
	var (
		lc net.ListenConfig
		d  net.Dialer
	)
	return &host{
		name: name,
		ip:   netip.AddrFrom4([4]byte{127, 0, 0, l.next}),
		listen: func(ctx context.Context, addr string) (net.Listener, error) {
			return lc.Listen(ctx, "tcp", addr)
		},
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
	}
}

// meshTests are the waypoint's integration tests: each builds a mesh on the
// network it is given.
var meshTests = []struct {
	name string
	run  func(*testing.T, network)
}{
	{"HTTP1ThroughWaypointPropagatesTrace", testHTTP1ThroughWaypointPropagatesTrace},
	{"H2CThroughWaypoint", testH2CThroughWaypoint},
	{"GRPCUnaryAndStreamingThroughWaypoint", testGRPCUnaryAndStreamingThroughWaypoint},
	{"GetOnlyPolicyDeniesPost", testGetOnlyPolicyDeniesPost},
	{"WeightedSplit90To10", testWeightedSplit90To10},
	{"RouteFiltersThroughWaypoint", testRouteFiltersThroughWaypoint},
	{"WebSocketUpgradeThroughWaypoint", testWebSocketUpgradeThroughWaypoint},
	{"KilledBackendIsEjectedAndTrafficContinues", testKilledBackendIsEjectedAndTrafficContinues},
	{"RetriesAnd503", testRetriesAnd503},
	{"RequestTimeout", testRequestTimeout},
	{"PerTryTimeoutRetries", testPerTryTimeoutRetries},
	{"TCPPassthrough", testTCPPassthrough},
	{"UnknownDestinationRefused", testUnknownDestinationRefused},
	{"BadInput", testBadInput},
}

// TestMeshOnLoopback runs the mesh tests with every party on its own
// loopback address in this process's namespace.
func TestMeshOnLoopback(t *testing.T) {
	for _, tt := range meshTests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newLoopback()) })
	}
}

// mesh is a waypoint with real HBONE: a client "ztunnel" dialing it, and
// pods, each behind a fake ztunnel (an hbone.Server that relays to the
// pod's app). Each party is a host of the network.
type mesh struct {
	t        testing.TB
	net      network
	ca       *hbonetest.CA
	svids    *hbonetest.Source
	wp       *server.Server
	wpID     spiffeid.ID
	wpHost   *host
	wpAddr   netip.AddrPort
	clientID spiffeid.ID
	clientIP netip.Addr
	client   *hbone.Client
	spans    *tracetest.InMemoryExporter
	logs     *logSink
	metrics  string       // base URL of the metrics listener
	scraper  *http.Client // dials from the waypoint's host
}

type (
	serverConfig = server.Config
	meshOption   func(*serverConfig)
)

// Profiler labels ("party") on the goroutines of each party, so that a CPU
// profile of a benchmark (go test -cpuprofile) can be split with
// go tool pprof -tagfocus party=waypoint.
var (
	waypointParty = pprof.Labels("party", "waypoint")
	ztunnelParty  = pprof.Labels("party", "ztunnel")
	appParty      = pprof.Labels("party", "app")
	clientParty   = pprof.Labels("party", "client")
)

// goLabeled runs f in a new goroutine carrying labels (inherited by the
// goroutines it starts).
func goLabeled(labels pprof.LabelSet, f func()) {
	go pprof.Do(context.Background(), labels, func(context.Context) { f() })
}

func newMesh(t testing.TB, nw network, opts ...meshOption) *mesh {
	t.Helper()
	m := &mesh{
		t:        t,
		net:      nw,
		ca:       hbonetest.NewCA(t, "cluster.local"),
		wpID:     spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint"),
		clientID: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client"),
		spans:    tracetest.NewInMemoryExporter(),
		logs:     &logSink{},
	}
	clientHost := nw.host(t, "client")
	m.clientIP = clientHost.ip
	m.wpHost = nw.host(t, "waypoint")
	m.svids = hbonetest.NewSource(m.ca.SVID(t, m.wpID.String()), m.ca.SVID(t, m.clientID.String()))
	cfg := server.Config{
		Identity: m.wpID, SVIDs: m.svids, Bundles: m.ca.Bundle(),
		MetricsAddr: netip.AddrPortFrom(m.wpHost.ip, 0).String(), HealthAddr: "-", AdminAddr: "-",
		DialTCP: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return m.wpHost.dial(ctx, dst.String())
		},
		Tracing: telemetry.TracingConfig{Exporter: m.spans, Sampling: 1},
		Proxy:   proxy.Config{Seed: 1, DrainTimeout: 100 * time.Millisecond},
		Logger:  slog.New(m.logs),
	}
	for _, o := range opts {
		o(&cfg)
	}
	wp, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.wp = wp
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := m.wpHost.listen(ctx, netip.AddrPortFrom(m.wpHost.ip, 0).String())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	m.wpAddr = netip.MustParseAddrPort(ln.Addr().String())
	opened := make(chan string, 1)
	listen := func(addr string) (net.Listener, error) {
		if addr == "-" {
			return nil, nil
		}
		l, err := m.wpHost.listen(ctx, addr)
		if err == nil {
			opened <- l.Addr().String()
		}
		return l, err
	}
	done := make(chan error, 1)
	goLabeled(waypointParty, func() { done <- wp.Serve(ctx, ln, listen) })
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("waypoint Serve: %v", err)
		}
	})
	select {
	case a := <-opened:
		m.metrics = "http://" + a
	case err := <-done:
		t.Fatalf("waypoint Serve: %v", err)
	}
	scrapeTr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return m.wpHost.dial(ctx, addr)
	}}
	t.Cleanup(scrapeTr.CloseIdleConnections)
	m.scraper = &http.Client{Transport: scrapeTr, Timeout: 10 * time.Second}
	m.client, err = hbone.NewClient(hbone.ClientConfig{
		SVIDs: m.svids, Bundles: m.ca.Bundle(),
		DialTCP: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return clientHost.dial(ctx, dst.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.client.Close() })
	return m
}

// pod is a workload: an app on ip:appPort behind a fake ztunnel on
// ip:hbonePort, both on the pod's host.
type pod struct {
	name, sa string
	ip       netip.Addr
	appPort  uint16
	hbone    uint16
	kill     func()
}

// addPod starts an app server (HTTP/1.1 and h2c) for handler and its
// ztunnel; serve may replace the app server (gRPC, raw TCP).
func (m *mesh) addPod(name, sa string, handler http.Handler) *pod {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: &protos, ReadHeaderTimeout: 5 * time.Second}
	return m.addPodServing(name, sa, func(ln net.Listener) func() {
		goLabeled(appParty, func() { _ = srv.Serve(ln) })
		return func() { srv.Close() }
	})
}

func (m *mesh) addPodServing(name, sa string, serve func(net.Listener) (stop func())) *pod {
	t := m.t
	t.Helper()
	h := m.net.host(t, name)
	p := &pod{name: name, sa: sa, ip: h.ip}
	ctx, cancel := context.WithCancel(context.Background())
	app, err := h.listen(ctx, netip.AddrPortFrom(p.ip, 0).String())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.appPort = netip.MustParseAddrPort(app.Addr().String()).Port()
	stopApp := serve(app)

	id := spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/demo/sa/%s", sa))
	m.svids.Set(m.ca.SVID(t, id.String()))
	zt, err := hbone.NewServer(hbone.ServerConfig{
		Identity: id, SVIDs: m.svids, Bundles: m.ca.Bundle(), DrainTimeout: 10 * time.Millisecond,
		Handler: hbone.HandlerFunc(func(ctx context.Context, in *hbone.Incoming) error {
			if in.Peer != m.wpID {
				return fmt.Errorf("%w: only the waypoint may connect", hbone.ErrDenied)
			}
			c, err := h.dial(ctx, in.Target.String())
			if err != nil {
				return fmt.Errorf("%w: %w", hbone.ErrUnreachable, err)
			}
			st, err := in.Accept()
			if err != nil {
				c.Close()
				return err
			}
			_, _, err = hbone.Relay(st, c)
			return err
		}),
	})
	if err != nil {
		cancel()
		stopApp()
		t.Fatal(err)
	}
	hl, err := h.listen(ctx, netip.AddrPortFrom(p.ip, 0).String())
	if err != nil {
		cancel()
		stopApp()
		t.Fatal(err)
	}
	p.hbone = netip.MustParseAddrPort(hl.Addr().String()).Port()
	done := make(chan struct{})
	goLabeled(ztunnelParty, func() { defer close(done); _ = zt.Serve(ctx, hl) })
	var once sync.Once
	p.kill = func() {
		once.Do(func() {
			cancel()
			<-done
			stopApp()
		})
	}
	t.Cleanup(p.kill)
	return p
}

// workload describes p as a backend of the services, all on port 80.
func (p *pod) workload(services ...string) model.Workload {
	w := model.Workload{
		Namespace: "demo", Name: p.name, WorkloadName: p.name, ServiceAccount: p.sa,
		CanonicalService: p.name, Addresses: []netip.Addr{p.ip}, HBONEPort: p.hbone,
		Services: map[string]map[uint16]uint16{},
	}
	for _, s := range services {
		w.Services["demo/"+s] = map[uint16]uint16{80: p.appPort}
	}
	return w
}

// service returns a Service model named name with VIP 10.96.0.n:80.
func service(name string, n byte, proto model.Protocol) model.Service {
	return model.Service{
		Namespace: "demo", Name: name, Hostname: name + ".demo.svc.cluster.local",
		Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, n})},
		Ports:     []model.Port{{Port: 80, Protocol: proto}},
	}
}

func vip(n byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, 0, n}), 80)
}

func (m *mesh) update(snap *model.Snapshot) {
	m.t.Helper()
	snap.Gateway = model.Ref{Kind: model.KindGateway, Namespace: "demo", Name: "waypoint"}
	if err := m.wp.Update(snap); err != nil {
		m.t.Fatalf("update: %v", err)
	}
}

// dial opens a tunnel through the waypoint to target, as a client's
// ztunnel would.
func (m *mesh) dial(ctx context.Context, target netip.AddrPort) (net.Conn, error) {
	return m.dialVia(ctx, m.wpAddr, target)
}

// dialVia opens a tunnel to target through the waypoint at server (m's
// identity, maybe another process).
func (m *mesh) dialVia(ctx context.Context, server, target netip.AddrPort) (net.Conn, error) {
	return m.client.Dial(ctx, hbone.Request{
		Source: m.clientID, Destination: m.wpID, Server: server, Target: target,
		SourceIP: m.clientIP,
	})
}

// httpClient talks HTTP/1.1 (or h2c) to target through the waypoint.
func (m *mesh) httpClient(target netip.AddrPort, h2c bool) *http.Client {
	return m.httpClientVia(m.wpAddr, target, h2c)
}

// httpClientVia talks HTTP/1.1 (or h2c) to target through the waypoint at
// server, on at most loadClients tunnels.
func (m *mesh) httpClientVia(server, target netip.AddrPort, h2c bool) *http.Client {
	var protos http.Protocols
	if h2c {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.dialVia(ctx, server, target)
		},
		MaxIdleConnsPerHost: loadClients,
		MaxConnsPerHost:     loadClients,
	}
	m.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// logSink captures the access log.
type logSink struct {
	mu      sync.Mutex
	records []map[string]any
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *logSink) WithGroup(string) slog.Handler            { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "request" {
		return nil
	}
	rec := map[string]any{}
	r.Attrs(func(a slog.Attr) bool { rec[a.Key] = a.Value.Any(); return true })
	s.mu.Lock()
	s.records = append(s.records, rec)
	s.mu.Unlock()
	return nil
}

func (s *logSink) all() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.records...)
}
