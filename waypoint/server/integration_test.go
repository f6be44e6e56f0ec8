package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

// echo answers with the pod's name and what it received.
func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pod", name)
		w.Header().Set("X-Got-Traceparent", r.Header.Get("Traceparent"))
		w.Header().Set("X-Got-Path", r.URL.Path)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Got-Proto", r.Proto)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.Path, len(body))
	})
}

// reply is a response read whole.
type reply struct {
	StatusCode int
	Header     http.Header
}

func get(t *testing.T, c *http.Client, method, url string, hdr ...string) (reply, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header}, string(b)
}

// must returns a check failing the test on a write error.
func must(t *testing.T) func(int, error) {
	return func(_ int, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func oneService(m *mesh, proto model.Protocol) *pod {
	p := m.addPod("echo-1", "echo", echo("echo-1"))
	m.update(&model.Snapshot{
		Services:  []model.Service{service("echo", 1, proto)},
		Workloads: []model.Workload{p.workload("echo")},
	})
	return p
}

func testHTTP1ThroughWaypointPropagatesTrace(t *testing.T, nw network) {
	m := newMesh(t, nw)
	oneService(m, model.Detect)
	c := m.httpClient(vip(1), false)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	resp, body := get(t, c, "GET", "http://echo.demo.svc.cluster.local/hello", "Traceparent", tp)
	if resp.StatusCode != 200 || body != "echo-1 GET /hello 0" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if p := resp.Header.Get("X-Got-Proto"); p != "HTTP/1.1" {
		t.Errorf("upstream protocol %s, want HTTP/1.1", p)
	}
	got := resp.Header.Get("X-Got-Traceparent")
	if !strings.HasPrefix(got, "00-0af7651916cd43dd8448eb211c80319c-") || got == tp {
		t.Errorf("upstream traceparent %q: want the incoming trace with the waypoint's span", got)
	}
	eventually(t, func() bool { return len(m.spans.GetSpans()) > 0 })
	spans := m.spans.GetSpans()
	if len(spans) != 1 || spans[0].Parent.SpanID().String() != "b7ad6b7169203331" ||
		!strings.Contains(got, spans[0].SpanContext.SpanID().String()) {
		t.Errorf("spans %+v: want one span, child of the incoming one, parent of the upstream's", spans)
	}
}

func testH2CThroughWaypoint(t *testing.T, nw network) {
	m := newMesh(t, nw)
	oneService(m, model.Detect)
	c := m.httpClient(vip(1), true)
	req, _ := http.NewRequest("POST", "http://echo.demo.svc.cluster.local/up", strings.NewReader(strings.Repeat("x", 100_000)))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "echo-1 POST /up 100000" {
		t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	if p := resp.Header.Get("X-Got-Proto"); p != "HTTP/2.0" {
		t.Errorf("upstream protocol %s, want HTTP/2.0", p)
	}
}

func testGetOnlyPolicyDeniesPost(t *testing.T, nw network) {
	m := newMesh(t, nw)
	p := m.addPod("echo-1", "echo", echo("echo-1"))
	get403 := model.Policy{
		Targets: []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}},
		Policy: authz.Policy{Namespace: "demo", Name: "get-only", Action: authz.Allow, Rules: []authz.Rule{{
			Clauses: []authz.Clause{{Matches: []authz.Match{{Methods: []authz.StringMatch{authz.ParseValue("GET")}}}}},
		}}},
	}
	m.update(&model.Snapshot{
		Services:  []model.Service{service("echo", 1, model.HTTP)},
		Workloads: []model.Workload{p.workload("echo")},
		Policies:  []model.Policy{get403},
	})
	c := m.httpClient(vip(1), false)
	if resp, _ := get(t, c, "GET", "http://echo/x"); resp.StatusCode != 200 {
		t.Errorf("GET: %d, want 200", resp.StatusCode)
	}
	resp, body := get(t, c, "POST", "http://echo/x")
	if resp.StatusCode != 403 || body != "RBAC: access denied" {
		t.Errorf("POST: %d %q, want 403 RBAC: access denied", resp.StatusCode, body)
	}
	metrics := scrape(t, m)
	for _, want := range []string{
		`istio_requests_total{connection_security_policy="mutual_tls",destination_app="unknown"`,
		`reporter="waypoint",request_protocol="http",response_code="403",response_flags="-"`,
		`source_principal="spiffe://cluster.local/ns/demo/sa/client",source_version="unknown",source_workload="unknown",source_workload_namespace="demo"} 1`,
		`istio_request_duration_milliseconds_bucket{`,
		`istio_request_bytes_count{`,
		`istio_response_bytes_sum{`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s in\n%s", want, metrics)
		}
	}
}

func testWeightedSplit90To10(t *testing.T, nw network) {
	m := newMesh(t, nw)
	v1 := m.addPod("v1", "echo", echo("v1"))
	v2 := m.addPod("v2", "echo", echo("v2"))
	split := model.Route{
		Parents: []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}},
		Route: route.Route{Namespace: "demo", Name: "split", Rules: []route.Rule{{
			Backends: []route.Backend{
				{Namespace: "demo", Name: "echo-v1", Port: 80, Weight: 90},
				{Namespace: "demo", Name: "echo-v2", Port: 80, Weight: 10},
			},
		}}},
	}
	m.update(&model.Snapshot{
		Services:  []model.Service{service("echo", 1, model.HTTP), service("echo-v1", 2, model.HTTP), service("echo-v2", 3, model.HTTP)},
		Workloads: []model.Workload{v1.workload("echo-v1"), v2.workload("echo-v2")},
		Routes:    []model.Route{split},
	})
	c := m.httpClient(vip(1), false)
	counts := map[string]int{}
	const n = 1000
	for range n {
		resp, _ := get(t, c, "GET", "http://echo/")
		counts[resp.Header.Get("X-Pod")]++
	}
	// Binomial(1000, 0.1): sd 9.5; 4 sd either side.
	if counts["v2"] < 62 || counts["v2"] > 138 || counts["v1"]+counts["v2"] != n {
		t.Fatalf("split %v, want v2 within 100±38 of %d", counts, n)
	}
}

func testRouteFiltersThroughWaypoint(t *testing.T, nw network) {
	m := newMesh(t, nw)
	p := m.addPod("echo-1", "echo", echo("echo-1"))
	r := model.Route{
		Parents: []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}},
		Route: route.Route{Namespace: "demo", Name: "filters", Rules: []route.Rule{
			{
				Matches: []route.Match{{Path: route.PathMatch{Type: route.PathPrefix, Value: "/old"}}},
				Filters: route.Filters{
					Rewrite:         &route.Rewrite{Hostname: "new.example", Path: route.PathModifier{Type: route.PathReplacePrefix, Value: "/new"}},
					RequestHeaders:  route.HeaderModifier{Set: []route.Header{{Name: "X-Added", Value: "yes"}}},
					ResponseHeaders: route.HeaderModifier{Add: []route.Header{{Name: "X-Resp", Value: "r"}}, Remove: []string{"X-Got-Host"}},
				},
				Backends: []route.Backend{{Namespace: "demo", Name: "echo", Port: 80, Weight: 1}},
			},
			{
				Matches: []route.Match{{Path: route.PathMatch{Type: route.PathExact, Value: "/moved"}}},
				Filters: route.Filters{Redirect: &route.Redirect{Hostname: "elsewhere", StatusCode: 301}},
			},
		}},
	}
	m.update(&model.Snapshot{
		Services:  []model.Service{service("echo", 1, model.HTTP)},
		Workloads: []model.Workload{p.workload("echo")},
		Routes:    []model.Route{r},
	})
	c := m.httpClient(vip(1), false)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, _ := get(t, c, "GET", "http://echo/old/x")
	if resp.Header.Get("X-Got-Path") != "/new/x" || resp.Header.Get("X-Got-Added") != "yes" ||
		resp.Header.Get("X-Resp") != "r" || resp.Header.Get("X-Got-Host") != "" {
		t.Errorf("filters not applied: %v", resp.Header)
	}
	if resp, _ := get(t, c, "GET", "http://echo/moved"); resp.StatusCode != 301 || resp.Header.Get("Location") != "http://elsewhere/moved" {
		t.Errorf("redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get(t, c, "GET", "http://echo/none"); resp.StatusCode != 404 {
		t.Errorf("unrouted: %d, want 404", resp.StatusCode)
	}
}

func testWebSocketUpgradeThroughWaypoint(t *testing.T, nw network) {
	m := newMesh(t, nw)
	p := m.addPod("ws", "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err != nil {
			return
		}
		if brw.Flush() == nil {
			_, _ = io.Copy(conn, brw) // echo frames (opaque bytes here)
		}
	}))
	m.update(&model.Snapshot{Services: []model.Service{service("echo", 1, model.HTTP)}, Workloads: []model.Workload{p.workload("echo")}})
	conn, err := m.dial(context.Background(), vip(1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must(t)(io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	for _, msg := range []string{"ping", "pong pong"} {
		must(t)(io.WriteString(conn, msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
}

// eventually waits (up to 5 s) for cond, which the server makes true
// right after it answers.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func scrape(t *testing.T, m *mesh) string {
	t.Helper()
	resp, err := m.scraper.Get(m.metrics + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
