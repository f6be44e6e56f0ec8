package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

var (
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/zt/sa/client")
	echoID   = spiffeid.RequireFromString("spiffe://cluster.local/ns/zt/sa/echo")
	client   = &state.Workload{UID: "Kubernetes//Pod/zt/client-1", Name: "client-1", Namespace: "zt", WorkloadName: "client",
		CanonicalName: "client", CanonicalRevision: "v1", Identity: clientID, HBONE: true,
		Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.5")}}
	echo = &state.Workload{UID: "Kubernetes//Pod/zt/echo-1", Name: "echo-1", Namespace: "zt", WorkloadName: "echo",
		Identity: echoID, HBONE: true, Addresses: []netip.Addr{netip.MustParseAddr("10.244.2.7")},
		Services: map[string][]state.Port{"zt/echo.zt.svc.cluster.local": {{ServicePort: 9000, TargetPort: 9000}}}}
	echoSvc = &state.Service{Name: "echo", Namespace: "zt", Hostname: "echo.zt.svc.cluster.local",
		VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.50")}, Ports: []state.Port{{ServicePort: 9000, TargetPort: 9000}}}
)

func tables() *state.Tables {
	t := state.NewTables()
	t.UpsertWorkload(client)
	t.UpsertWorkload(echo)
	t.UpsertService(echoSvc)
	return t
}

func scrape(t *testing.T, r *Recorder) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// metricLine returns the sample line of name whose labels contain every one
// of want, or "".
func metricLine(text, name string, want ...string) string {
next:
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		return line
	}
	return ""
}

func TestRecorderCountsWithIstioLabels(t *testing.T) {
	var logs bytes.Buffer
	r, err := NewRecorder(tables(), slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	out := &proxy.ConnInfo{ID: 1, Direction: proxy.Outbound, Src: client.Addresses[0], Dst: netip.MustParseAddrPort("10.96.0.50:9000"),
		SrcWorkload: client, DstWorkload: echo, SrcIdentity: clientID, DstIdentity: echoID, MTLS: true, Via: "hbone", Start: time.Now()}
	in := &proxy.ConnInfo{ID: 2, Direction: proxy.Inbound, Src: client.Addresses[0], Dst: netip.MustParseAddrPort("10.244.2.7:9000"),
		SrcWorkload: client, DstWorkload: echo, SrcIdentity: clientID, DstIdentity: echoID, MTLS: true, Via: "hbone", Start: time.Now()}
	plain := &proxy.ConnInfo{ID: 3, Direction: proxy.Inbound, Src: netip.MustParseAddr("10.244.1.9"), Dst: netip.MustParseAddrPort("10.244.2.7:8080"),
		DstWorkload: echo, DstIdentity: echoID, Via: "plaintext", Start: time.Now()}
	for _, c := range []*proxy.ConnInfo{out, in, plain} {
		r.Opened(c)
	}
	// Bytes come through Progress while open and the rest with Closed,
	// which adds only what it says Progress did not report. in's come at
	// the scrape, as the proxy reports open connections' progress then
	// (BeforeScrape).
	r.Progress(out, proxy.Bytes{Sent: 1, Received: 2})
	r.Closed(out, proxy.Bytes{Sent: 3, Received: 5}, proxy.Bytes{Sent: 2, Received: 3}, nil)
	r.Closed(in, proxy.Bytes{Sent: 3, Received: 5}, proxy.Bytes{}, errors.New("reset"))
	scrapes := 0
	r.BeforeScrape(func() {
		if scrapes++; scrapes == 1 {
			r.Progress(in, proxy.Bytes{Sent: 3, Received: 5})
		}
	})
	r.Refused(&proxy.ConnInfo{ID: 4, Direction: proxy.Inbound, DstWorkload: echo, Start: time.Now()}, proxy.ErrDenied)

	text := scrape(t, r)
	if scrapes != 1 {
		t.Errorf("the scrape ran BeforeScrape's function %d times, want 1", scrapes)
	}
	common := []string{`source_workload="client"`, `source_workload_namespace="zt"`,
		`source_principal="spiffe://cluster.local/ns/zt/sa/client"`, `source_canonical_revision="v1"`,
		`destination_workload="echo"`, `destination_workload_namespace="zt"`,
		`destination_principal="spiffe://cluster.local/ns/zt/sa/echo"`,
		`destination_service="echo.zt.svc.cluster.local"`, `destination_service_name="echo"`,
		`connection_security_policy="mutual_tls"`, `request_protocol="tcp"`, `response_flags="-"`}
	for _, reporter := range []string{"source", "destination"} {
		want := append([]string{`reporter="` + reporter + `"`}, common...)
		for name, value := range map[string]string{
			"istio_tcp_connections_opened_total": "1", "istio_tcp_connections_closed_total": "1",
			"istio_tcp_received_bytes_total": "3", "istio_tcp_sent_bytes_total": "5",
		} {
			line := metricLine(text, name, want...)
			if line == "" || !strings.HasSuffix(line, "} "+value) {
				t.Errorf("%s reporter=%s: got %q, want value %s with labels %v", name, reporter, line, value, want)
			}
		}
	}
	if line := metricLine(text, "istio_tcp_connections_opened_total", `connection_security_policy="none"`,
		`source_workload="unknown"`, `source_principal="unknown"`, `destination_service="unknown"`); !strings.HasSuffix(line, " 1") {
		t.Errorf("plaintext connection (port 8080 is no service's): %q", line)
	}
	if line := metricLine(text, "ambit_ztunnel_connections_refused_total", `reason="policy"`); !strings.HasSuffix(line, " 1") {
		t.Errorf("refused: %q", line)
	}
	if n := strings.Count(text, "istio_tcp_connections_opened_total{"); n != 3 {
		t.Errorf("%d opened series, want 3 (refused connections are not opened)", n)
	}

	// One access line per finished or refused connection.
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3: %s", len(lines), logs.String())
	}
	first := lines[0]
	for k, v := range map[string]any{"msg": "connection complete", "conn": 1.0, "direction": "source", "src": "10.244.1.5",
		"dst": "10.96.0.50:9000", "identity": clientID.String(), "dst_identity": echoID.String(),
		"dst_service": "echo.zt.svc.cluster.local", "security": "mutual_tls", "sent": 5.0, "received": 3.0} {
		if first[k] != v {
			t.Errorf("access line %s = %v, want %v", k, first[k], v)
		}
	}
	if lines[1]["err"] != "reset" || lines[2]["msg"] != "connection refused" {
		t.Errorf("error and refusal lines: %v / %v", lines[1], lines[2])
	}
}

func TestReadyWaitsForEveryCondition(t *testing.T) {
	r := NewReady("xds", "handoff")
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz/ready", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "xds, handoff") {
		t.Fatalf("before: %d %q", code, body)
	}
	r.Done("xds")
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "handoff") || strings.Contains(body, "xds") {
		t.Fatalf("xds only: %d %q", code, body)
	}
	r.Done("handoff")
	r.Done("handoff")
	if code, _ := get(); code != http.StatusOK {
		t.Fatalf("after both: %d", code)
	}
}

func TestConfigDumpShowsTablesPodsAndCertificates(t *testing.T) {
	tb := tables()
	exp := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	src := Sources{Node: "ambit-node-1", Tables: tb.Dump,
		Certificates: func() []identity.Certificate {
			return []identity.Certificate{{Identity: clientID.String(), Serial: "1f", NotAfter: exp}}
		},
		Pods: func() []proxy.PodInfo {
			return []proxy.PodInfo{{UID: "u1", Name: "client-1", Namespace: "zt", Identity: clientID.String(), Connections: 2}}
		}}
	_, _, admin := NewServer(ServerConfig{Dump: src}).Mux()
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config_dump", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	var d ConfigDump
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d.Node != "ambit-node-1" || len(d.Workloads) != 2 || len(d.Services) != 1 || len(d.Pods) != 1 || len(d.Certificates) != 1 {
		t.Fatalf("dump: %s", rec.Body)
	}
	if w := d.Workloads[0]; w.Name != "client-1" || w.Protocol != "HBONE" || w.Identity != clientID.String() || w.Addresses[0] != client.Addresses[0] {
		t.Errorf("workload: %+v", w)
	}
	if s := d.Services[0]; s.Hostname != echoSvc.Hostname || s.VIPs[0] != echoSvc.VIPs[0] {
		t.Errorf("service: %+v", s)
	}
	if c := d.Certificates[0]; !c.NotAfter.Equal(exp) || c.Identity != clientID.String() {
		t.Errorf("certificate: %+v", c)
	}
	if p := d.Pods[0]; p.Connections != 2 || p.Name != "client-1" {
		t.Errorf("pod: %+v", p)
	}
	empty := Sources{}.Dump(time.Now())
	b, _ := json.Marshal(empty)
	if !strings.Contains(string(b), `"workloads":[]`) {
		t.Errorf("empty dump should list empty arrays, not null: %s", b)
	}
}

func TestServerServesAndStops(t *testing.T) {
	r, err := NewRecorder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(ServerConfig{MetricsAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Metrics: r.Handler(), Ready: NewReady()})
	metrics, health, _ := s.Mux()
	for path, h := range map[string]http.Handler{"/metrics": metrics, "/stats/prometheus": metrics, "/healthz/ready": health} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	busy := NewServer(ServerConfig{MetricsAddr: "127.0.0.1:0", HealthAddr: "256.0.0.1:1"})
	if err := busy.Run(context.Background()); err == nil {
		t.Fatal("bad address accepted")
	}
}
