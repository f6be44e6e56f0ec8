package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
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

// mesh is a waypoint with real HBONE on loopback: a client "ztunnel"
// dialing it, and pods, each behind a fake ztunnel (an hbone.Server that
// relays to the pod's app), on their own 127.0.0.x address.
type mesh struct {
	t        testing.TB
	ca       *hbonetest.CA
	svids    *hbonetest.Source
	wp       *server.Server
	wpID     spiffeid.ID
	wpAddr   netip.AddrPort
	clientID spiffeid.ID
	client   *hbone.Client
	spans    *tracetest.InMemoryExporter
	logs     *logSink
	metrics  string // base URL of the metrics listener

	mu     sync.Mutex
	nextIP int
}

type (
	serverConfig = server.Config
	meshOption   func(*serverConfig)
)

func newMesh(t testing.TB, opts ...meshOption) *mesh {
	t.Helper()
	m := &mesh{
		t:        t,
		ca:       hbonetest.NewCA(t, "cluster.local"),
		wpID:     spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint"),
		clientID: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/client"),
		spans:    tracetest.NewInMemoryExporter(),
		logs:     &logSink{},
		nextIP:   10,
	}
	m.svids = hbonetest.NewSource(m.ca.SVID(t, m.wpID.String()), m.ca.SVID(t, m.clientID.String()))
	cfg := server.Config{
		Identity: m.wpID, SVIDs: m.svids, Bundles: m.ca.Bundle(),
		MetricsAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", AdminAddr: "-",
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.wpAddr = netip.MustParseAddrPort(ln.Addr().String())
	opened := make(chan string, 3)
	listen := func(addr string) (net.Listener, error) {
		if addr == "-" {
			return nil, nil
		}
		l, err := net.Listen("tcp", addr)
		if err == nil {
			opened <- l.Addr().String()
		}
		return l, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wp.Serve(ctx, ln, listen) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("waypoint Serve: %v", err)
		}
	})
	select {
	case a := <-opened: // metrics first
		m.metrics = "http://" + a
	case err := <-done:
		t.Fatalf("waypoint Serve: %v", err)
	}
	m.client, err = hbone.NewClient(hbone.ClientConfig{SVIDs: m.svids, Bundles: m.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.client.Close() })
	return m
}

// pod is a workload: an app on ip:appPort behind a fake ztunnel on
// ip:hbonePort.
type pod struct {
	name, sa string
	ip       netip.Addr
	appPort  uint16
	hbone    uint16
	kill     func()
}

func (m *mesh) newIP() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextIP++
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(m.nextIP)})
}

// addPod starts an app server (HTTP/1.1 and h2c) for handler and its
// ztunnel; serve may replace the app server (gRPC, raw TCP).
func (m *mesh) addPod(name, sa string, handler http.Handler) *pod {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: &protos, ReadHeaderTimeout: 5 * time.Second}
	return m.addPodServing(name, sa, func(ln net.Listener) func() {
		go func() { _ = srv.Serve(ln) }()
		return func() { srv.Close() }
	})
}

func (m *mesh) addPodServing(name, sa string, serve func(net.Listener) (stop func())) *pod {
	t := m.t
	t.Helper()
	p := &pod{name: name, sa: sa, ip: m.newIP()}
	app, err := net.Listen("tcp", netip.AddrPortFrom(p.ip, 0).String())
	if err != nil {
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
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", in.Target.String())
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
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", netip.AddrPortFrom(p.ip, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	p.hbone = netip.MustParseAddrPort(hl.Addr().String()).Port()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = zt.Serve(ctx, hl) }()
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
	return m.client.Dial(ctx, hbone.Request{
		Source: m.clientID, Destination: m.wpID, Server: m.wpAddr, Target: target,
		SourceIP: netip.MustParseAddr("10.0.0.5"),
	})
}

// httpClient talks HTTP/1.1 (or h2c) to target through the waypoint.
func (m *mesh) httpClient(target netip.AddrPort, h2c bool) *http.Client {
	var protos http.Protocols
	if h2c {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		Protocols: &protos,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return m.dial(ctx, target)
		},
		MaxIdleConnsPerHost: 16,
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
