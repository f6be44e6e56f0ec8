package telemetry

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Unknown is the value of a label the waypoint cannot know, as Istio says it.
const Unknown = "unknown"

// Labels are Istio's standard metric labels of one request.
type Labels struct {
	SourceWorkload, SourceWorkloadNamespace, SourcePrincipal, SourceApp, SourceVersion string
	SourceCanonicalService, SourceCanonicalRevision, SourceCluster                     string

	DestinationWorkload, DestinationWorkloadNamespace, DestinationPrincipal string
	DestinationApp, DestinationVersion                                      string
	DestinationService, DestinationServiceName, DestinationServiceNamespace string
	DestinationCanonicalService, DestinationCanonicalRevision               string
	DestinationCluster                                                      string

	// RequestProtocol is "http" or "grpc" (or "tcp" for TCP metrics).
	RequestProtocol string
	ResponseCode    int
	// GRPCResponseStatus is the grpc-status of gRPC calls, else "".
	GRPCResponseStatus string
	// ResponseFlags are Envoy's ("-" none, NR no route, UH no healthy
	// upstream, UF connect failure, UT timeout, URX retries exhausted, DC
	// downstream disconnect).
	ResponseFlags            string
	ConnectionSecurityPolicy string
}

var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags",
	"connection_security_policy",
}

func (l *Labels) values() []string {
	return []string{
		"waypoint",
		or(l.SourceWorkload), or(l.SourceWorkloadNamespace), or(l.SourcePrincipal), or(l.SourceApp), or(l.SourceVersion),
		or(l.SourceCanonicalService), or(l.SourceCanonicalRevision), or(l.SourceCluster),
		or(l.DestinationWorkload), or(l.DestinationWorkloadNamespace), or(l.DestinationPrincipal),
		or(l.DestinationApp), or(l.DestinationVersion),
		or(l.DestinationService), or(l.DestinationServiceName), or(l.DestinationServiceNamespace),
		or(l.DestinationCanonicalService), or(l.DestinationCanonicalRevision), or(l.DestinationCluster),
		l.RequestProtocol, strconv.Itoa(l.ResponseCode), l.GRPCResponseStatus, orDash(l.ResponseFlags),
		or(l.ConnectionSecurityPolicy),
	}
}

func or(s string) string {
	if s == "" {
		return Unknown
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Metrics are the waypoint's Prometheus metrics, registered on a registry
// of the caller's (no global registry).
type Metrics struct {
	reg                          *prometheus.Registry
	requests                     *prometheus.CounterVec
	duration, reqBytes, resBytes *prometheus.HistogramVec
	tcpOpened, tcpClosed         *prometheus.CounterVec
	tcpSent, tcpReceived         *prometheus.CounterVec

	// series keeps the request metrics' children by their labels, so that
	// recording a request costs one map lookup, not a hash of every label
	// value for each of four vectors. It holds one entry per series the
	// vectors hold, which keep theirs forever too.
	seriesMu sync.RWMutex
	series   map[Labels]*requestSeries
}

// requestSeries are the children of the request metrics for one set of
// labels.
type requestSeries struct {
	requests                     prometheus.Counter
	duration, reqBytes, resBytes prometheus.Observer
}

// Istio's buckets.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	bytesBuckets    = prometheus.ExponentialBuckets(1, 10, 10)
)

// NewMetrics creates the metrics on a new registry, with Go runtime and
// process collectors.
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	tcpLabels := []string{"reporter", "source_workload", "source_workload_namespace", "source_principal",
		"destination_workload", "destination_workload_namespace", "destination_principal",
		"destination_service", "destination_service_name", "destination_service_namespace",
		"request_protocol", "response_flags", "connection_security_policy"}
	m := &Metrics{
		reg:    reg,
		series: map[Labels]*requestSeries{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_requests_total", Help: "Requests processed.",
		}, labelNames),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_duration_milliseconds", Help: "Request duration.", Buckets: durationBuckets,
		}, labelNames),
		reqBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_request_bytes", Help: "Request body sizes.", Buckets: bytesBuckets,
		}, labelNames),
		resBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "istio_response_bytes", Help: "Response body sizes.", Buckets: bytesBuckets,
		}, labelNames),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened.",
		}, tcpLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed.",
		}, tcpLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the client on TCP connections.",
		}, tcpLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the client on TCP connections.",
		}, tcpLabels),
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.duration, m.reqBytes, m.resBytes, m.tcpOpened, m.tcpClosed, m.tcpSent, m.tcpReceived,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// RecordRequest records one HTTP request.
func (m *Metrics) RecordRequest(l *Labels, d time.Duration, reqBytes, resBytes int64) {
	s := m.requestSeries(l)
	s.requests.Inc()
	s.duration.Observe(float64(d) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(reqBytes))
	s.resBytes.Observe(float64(resBytes))
}

// requestSeries returns the children of the request metrics for l,
// creating them the first time.
func (m *Metrics) requestSeries(l *Labels) *requestSeries {
	m.seriesMu.RLock()
	s := m.series[*l]
	m.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	if s = m.series[*l]; s == nil {
		v := l.values()
		s = &requestSeries{
			requests: m.requests.WithLabelValues(v...),
			duration: m.duration.WithLabelValues(v...),
			reqBytes: m.reqBytes.WithLabelValues(v...),
			resBytes: m.resBytes.WithLabelValues(v...),
		}
		m.series[*l] = s
	}
	return s
}

func (l *Labels) tcpValues() []string {
	return []string{"waypoint", or(l.SourceWorkload), or(l.SourceWorkloadNamespace), or(l.SourcePrincipal),
		or(l.DestinationWorkload), or(l.DestinationWorkloadNamespace), or(l.DestinationPrincipal),
		or(l.DestinationService), or(l.DestinationServiceName), or(l.DestinationServiceNamespace),
		"tcp", orDash(l.ResponseFlags), or(l.ConnectionSecurityPolicy)}
}

// TCPOpened records a TCP connection proxied without HTTP parsing.
func (m *Metrics) TCPOpened(l *Labels) { m.tcpOpened.WithLabelValues(l.tcpValues()...).Inc() }

// TCPClosed records its end and the bytes it carried each way.
func (m *Metrics) TCPClosed(l *Labels, sent, received int64) {
	v := l.tcpValues()
	m.tcpClosed.WithLabelValues(v...).Inc()
	m.tcpSent.WithLabelValues(v...).Add(float64(sent))
	m.tcpReceived.WithLabelValues(v...).Add(float64(received))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry, for tests and other collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }
