package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The tests here run the proxy's HTTP path for real (reverse proxy, transports,
// retries, timeouts) inside a testing/synctest bubble: upstreams are HTTP servers on
// in-memory pipes that the proxy dials instead of HBONE tunnels, so time is
// virtual and waits are exact.

var (
	testVIP      = netip.MustParseAddrPort("10.96.0.1:80")
	testEndpoint = netip.MustParseAddrPort("10.1.0.1:8080")
)

// noDialer satisfies Config.Dialer; the tests replace the proxy's dialer.
type noDialer struct{}

func (noDialer) Dial(context.Context, hbone.Request) (*hbone.Stream, error) {
	return nil, errors.New("no tunnels in this test")
}

// upstream is the app behind the test service: a handler, and the endpoint
// addresses whose dial fails (a dead pod).
type upstream struct {
	ln     *connListener // the proxy's own: hands connections to an http.Server
	srv    *http.Server
	mu     sync.Mutex
	dials  []string
	refuse map[string]bool
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{ln: newConnListener(), refuse: map[string]bool{}}
	u.srv = &http.Server{Handler: h}
	go func() { _ = u.srv.Serve(u.ln) }()
	return u
}

// dial replaces the proxy's HBONE dial: a connect failure for refused
// endpoints, else a pipe to the upstream server.
func (u *upstream) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	u.mu.Lock()
	u.dials = append(u.dials, addr)
	refused := u.refuse[addr]
	u.mu.Unlock()
	if refused {
		return nil, &connectError{errors.New("connection refused")}
	}
	c1, c2 := net.Pipe()
	select {
	case u.ln.ch <- c2:
		return c1, nil
	case <-ctx.Done():
		c1.Close()
		c2.Close()
		return nil, ctx.Err()
	}
}

// testProxy is a proxy serving one service, echo.demo (VIP testVIP, port
// 80, one endpoint testEndpoint), routed by rule, dialing u.
func testProxy(t *testing.T, u *upstream, rule route.Rule, cfg Config) *Proxy {
	t.Helper()
	cfg.Identity = spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/waypoint")
	cfg.Dialer = noDialer{}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.dialer = u.dial
	if err := p.Update(echoSnapshot(rule)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.h1.CloseIdleConnections(true)
		p.upH1.CloseIdleConnections()
		p.upH2.CloseIdleConnections()
		_ = u.srv.Close()
	})
	return p
}

func echoSnapshot(rule route.Rule) *model.Snapshot {
	return &model.Snapshot{
		Gateway: model.Ref{Kind: model.KindGateway, Namespace: "demo", Name: "waypoint"},
		Services: []model.Service{{Namespace: "demo", Name: "echo", Hostname: "echo.demo.svc.cluster.local",
			Addresses: []netip.Addr{testVIP.Addr()}, Ports: []model.Port{{Port: testVIP.Port(), TargetPort: testEndpoint.Port(), Protocol: model.HTTP}}}},
		Workloads: []model.Workload{{UID: "Kubernetes//Pod/demo/echo-1", Namespace: "demo", Name: "echo-1", ServiceAccount: "echo",
			Addresses: []netip.Addr{testEndpoint.Addr()}, Services: map[string]map[uint16]uint16{"demo/echo": {80: 8080}}}},
		Routes: []model.Route{{
			Parents: []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}},
			Route:   route.Route{Namespace: "demo", Name: "echo", Rules: []route.Rule{rule}},
		}},
	}
}

// toEcho is a rule sending everything to echo:80.
func toEcho() route.Rule {
	return route.Rule{Backends: []route.Backend{{Namespace: "demo", Name: "echo", Port: 80, Weight: 1}}}
}

// serve runs one request through the proxy as if it came through a tunnel to
// the service VIP.
func serve(p *Proxy, method, target string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r = r.WithContext(context.WithValue(r.Context(), connInfoKey{}, &connInfo{target: testVIP}))
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	return w
}
