package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestMetricsUseIstioNames(t *testing.T) {
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	m.RecordRequest(&Labels{ResponseCode: 200, RequestProtocol: "http", DestinationServiceName: "echo"}, 3*time.Millisecond, 10, 20)
	m.TCPOpened(&Labels{})
	m.TCPClosed(&Labels{}, 5, 7)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`istio_requests_total{`, `reporter="waypoint"`, `response_code="200"`, `destination_service_name="echo"`,
		`source_workload="unknown"`, `response_flags="-"`,
		`istio_request_duration_milliseconds_bucket{`, `le="5"`,
		`istio_request_bytes_sum{`, `istio_response_bytes_sum{`,
		`istio_tcp_connections_opened_total{`, `istio_tcp_sent_bytes_total{`, `request_protocol="tcp"`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestTracingPropagatesWithExportOff(t *testing.T) {
	tr, err := NewTracing(TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Traceparent", tp)
	ctx, span := tr.Start(context.Background(), r)
	defer span.End()
	out := http.Header{}
	tr.Inject(ctx, out)
	if got := out.Get("Traceparent"); got != tp {
		t.Errorf("traceparent %q, want %q passed on", got, tp)
	}
}

func TestTracingRecordsChildSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := NewTracing(TracingConfig{Exporter: exp, Sampling: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	ctx, span := tr.Start(context.Background(), r)
	out := http.Header{}
	tr.Inject(ctx, out)
	span.End()
	spans := exp.GetSpans() // synchronous export: already there
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 || !strings.Contains(out.Get("Traceparent"), spans[0].SpanContext.SpanID().String()) {
		t.Fatalf("spans %v, traceparent %q", spans, out.Get("Traceparent"))
	}
}

// TestRequestSeriesKeptApart: requests are counted under exactly their own
// labels, however many series there are and in whatever order they come
// (the children of the vectors are kept per label set).
func TestRequestSeriesKeptApart(t *testing.T) {
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	ok := Labels{ResponseCode: 200, RequestProtocol: "http", DestinationServiceName: "echo"}
	failed := ok
	failed.ResponseCode, failed.ResponseFlags = 503, "UF"
	grpc := ok
	grpc.RequestProtocol, grpc.GRPCResponseStatus = "grpc", "14"
	other := ok
	other.SourcePrincipal = "spiffe://cluster.local/ns/a/sa/b"
	for _, l := range []Labels{ok, failed, ok, grpc, other, ok, failed} {
		m.RecordRequest(&l, time.Millisecond, 10, 20)
	}
	want := map[string]float64{
		"http 200 - unknown": 3, "http 503 UF unknown": 2, "grpc 200 - unknown": 1,
		"http 200 - spiffe://cluster.local/ns/a/sa/b": 1,
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "istio_request") {
			continue
		}
		got := map[string]float64{}
		for _, mt := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			key := strings.Join([]string{l["request_protocol"], l["response_code"], l["response_flags"], l["source_principal"]}, " ")
			got[key] = mt.GetCounter().GetValue() + float64(mt.GetHistogram().GetSampleCount())
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", f.GetName(), diff)
		}
	}
}
