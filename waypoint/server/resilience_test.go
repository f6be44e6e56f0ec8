package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/lb"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

func testKilledBackendIsEjectedAndTrafficContinues(t *testing.T, nw network) {
	m := newMesh(t, nw)
	a := m.addPod("a", "echo", echo("a"))
	b := m.addPod("b", "echo", echo("b"))
	svc := service("echo", 1, model.HTTP)
	svc.LoadBalancing = lb.RoundRobin
	svc.Outlier = lb.Outlier{ConsecutiveErrors: 2, MaxEjectionPercent: 50}
	m.update(&model.Snapshot{Services: []model.Service{svc}, Workloads: []model.Workload{a.workload("echo"), b.workload("echo")}})
	c := m.httpClient(vip(1), false)
	seen := map[string]int{}
	for range 10 {
		resp, _ := get(t, c, "GET", "http://echo/")
		seen[resp.Header.Get("X-Pod")]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("both pods should serve before the kill: %v", seen)
	}
	a.kill()
	before := len(m.logs.all())
	for i := range 40 {
		resp, body := get(t, c, "GET", "http://echo/")
		if resp.StatusCode != 200 || resp.Header.Get("X-Pod") != "b" {
			t.Fatalf("request %d after the kill: %d %q", i, resp.StatusCode, body)
		}
	}
	eventually(t, func() bool { return len(m.logs.all()) >= before+40 })
	logs := m.logs.all()[before:]
	retried := 0
	for i, r := range logs {
		if r["attempts"].(int64) > 1 {
			retried++
			if i >= 10 {
				t.Errorf("request %d still tried the dead pod: %v", i, r)
			}
		}
	}
	if retried == 0 || retried > 2 {
		t.Errorf("%d requests retried around the dead pod, want 1-2 before it is ejected", retried)
	}
}

func testRetriesAnd503(t *testing.T, nw network) {
	m := newMesh(t, nw)
	var calls atomic.Int32
	p := m.addPod("flaky", "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if calls.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(body)
	}))
	m.update(&model.Snapshot{Services: []model.Service{service("echo", 1, model.HTTP)}, Workloads: []model.Workload{p.workload("echo")}})
	c := m.httpClient(vip(1), false)
	// The default policy retries 503; the body is replayed.
	resp, err := c.Post("http://echo/", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "payload" || calls.Load() != 2 {
		t.Fatalf("got %d %q after %d calls, want 200 payload after 2", resp.StatusCode, body, calls.Load())
	}
	// A route without retries passes the 503 on.
	m.update(echoWithRule(p, route.Rule{Retry: &route.Retry{Attempts: 0}}))
	calls.Store(0)
	if resp, _ := get(t, c, "GET", "http://echo/"); resp.StatusCode != 503 || calls.Load() != 1 {
		t.Fatalf("without retries: %d after %d calls", resp.StatusCode, calls.Load())
	}
}

func testRequestTimeout(t *testing.T, nw network) {
	m := newMesh(t, nw)
	release := make(chan struct{})
	defer close(release)
	p := m.addPod("slow", "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	m.update(echoWithRule(p, route.Rule{Timeouts: route.Timeouts{Request: 100 * time.Millisecond}}))
	resp, body := get(t, m.httpClient(vip(1), false), "GET", "http://echo/")
	if resp.StatusCode != 504 || body != "upstream request timeout" {
		t.Fatalf("got %d %q, want 504 upstream request timeout", resp.StatusCode, body)
	}
}

func testTCPPassthrough(t *testing.T, nw network) {
	m := newMesh(t, nw)
	p := m.addPodServing("tcp", "echo", func(ln net.Listener) func() {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
		return func() { ln.Close() }
	})
	m.update(&model.Snapshot{Services: []model.Service{service("echo", 1, model.Detect)}, Workloads: []model.Workload{p.workload("echo")}})
	conn, err := m.dial(context.Background(), vip(1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := "\x16\x03\x01 not http at all"
	must(t)(io.WriteString(conn, msg))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

func testUnknownDestinationRefused(t *testing.T, nw network) {
	m := newMesh(t, nw)
	oneService(m, model.HTTP)
	if _, err := m.dial(context.Background(), vip(9)); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("dial to an unknown destination: %v, want refused with 503", err)
	}
}

func testBadInput(t *testing.T, nw network) {
	m := newMesh(t, nw, func(c *serverConfig) { c.Proxy.ReadHeaderTimeout = 200 * time.Millisecond })
	oneService(m, model.HTTP)
	raw := func(req string) string {
		t.Helper()
		conn, err := m.dial(context.Background(), vip(1))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		must(t)(io.WriteString(conn, req))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return "error: " + err.Error()
		}
		resp.Body.Close()
		return resp.Status
	}
	for name, tt := range map[string]struct{ req, want string }{
		"malformed request line": {"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"},
		"bad header":             {"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "400 Bad Request"},
		"bad path escape":        {"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"},
		"oversized headers":      {"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", "431 Request Header Fields Too Large"},
	} {
		if got := raw(tt.req); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: got %s, want %s", name, got, tt.want)
		}
	}

	// Slowloris: headers that never end are cut off by ReadHeaderTimeout.
	conn, err := m.dial(context.Background(), vip(1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must(t)(io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("slow client not disconnected: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client held the connection for %v", d)
	}
}

func testPerTryTimeoutRetries(t *testing.T, nw network) {
	m := newMesh(t, nw)
	var calls atomic.Int32
	p := m.addPod("slow-once", "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-r.Context().Done() // the first attempt hangs until the waypoint gives up
			return
		}
		_, _ = io.WriteString(w, "second")
	}))
	m.update(echoWithRule(p, route.Rule{Retry: &route.Retry{Attempts: 1, PerTryTimeout: 100 * time.Millisecond, On: route.Retry5xx}}))
	resp, body := get(t, m.httpClient(vip(1), false), "GET", "http://echo/")
	if resp.StatusCode != 200 || body != "second" || calls.Load() != 2 {
		t.Fatalf("got %d %q after %d calls, want the retry's answer", resp.StatusCode, body, calls.Load())
	}
}

// echoWithRule is service echo on pod p with one route rule sending to it.
func echoWithRule(p *pod, rule route.Rule) *model.Snapshot {
	rule.Backends = []route.Backend{{Namespace: "demo", Name: "echo", Port: 80, Weight: 1}}
	return &model.Snapshot{
		Services: []model.Service{service("echo", 1, model.HTTP)}, Workloads: []model.Workload{p.workload("echo")},
		Routes: []model.Route{{
			Parents: []model.Ref{{Kind: model.KindService, Namespace: "demo", Name: "echo"}},
			Route:   route.Route{Namespace: "demo", Name: "echo", Rules: []route.Rule{rule}},
		}},
	}
}
