package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// Label values Istio uses.
const (
	// Unknown is the value of a label ztunnel cannot know.
	Unknown = "unknown"
	// MutualTLS and None are connection_security_policy values.
	MutualTLS = "mutual_tls"
	None      = "none"
	// Cluster is source_cluster and destination_cluster: Istio's default
	// cluster id (Ambit runs one cluster).
	Cluster = "Kubernetes"
)

// tcpLabels are Istio ztunnel's labels of its TCP metrics, in order.
var tcpLabels = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_service", "destination_service_namespace", "destination_service_name",
	"destination_workload", "destination_canonical_service", "destination_canonical_revision",
	"destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// Services finds the Service a connection was addressed to (*state.Tables).
type Services interface {
	ServiceByVIP(a netip.Addr) *state.Service
	ServiceByKey(key string) *state.Service
}

// Recorder turns the proxy's connection events into Istio's TCP metrics
// and access log lines. It implements proxy.Observer.
type Recorder struct {
	reg            *prometheus.Registry
	services       Services
	log            *slog.Logger
	now            func() time.Time
	opened, closed *prometheus.CounterVec
	sent, received *prometheus.CounterVec
	refused        *prometheus.CounterVec
	handler        http.Handler
	beforeScrape   atomic.Pointer[func()]
}

// NewRecorder creates the metrics on a registry of its own, with Go runtime
// and process collectors. services may be nil (destination_service is then
// unknown); log receives the access lines (nil: none).
func NewRecorder(services Services, log *slog.Logger) (*Recorder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, tcpLabels)
	}
	r := &Recorder{
		reg: prometheus.NewRegistry(), services: services, log: log, now: time.Now,
		opened:   counter("istio_tcp_connections_opened_total", "The total number of TCP connections opened"),
		closed:   counter("istio_tcp_connections_closed_total", "The total number of TCP connections closed"),
		sent:     counter("istio_tcp_sent_bytes_total", "The size of total bytes sent during response in case of a TCP connection"),
		received: counter("istio_tcp_received_bytes_total", "The size of total bytes received during request in case of a TCP connection"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_ztunnel_connections_refused_total",
			Help: "Connections refused before they were opened, by direction and reason (policy, not_ready, error)",
		}, []string{"reporter", "reason"}),
	}
	bytes := &scrapeFirst{run: r.runBeforeScrape, vecs: []*prometheus.CounterVec{r.sent, r.received}}
	for _, c := range []prometheus.Collector{r.opened, r.closed, bytes, r.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := r.reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register metrics: %w", err)
		}
	}
	r.handler = promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
	return r, nil
}

// Registry is where the metrics are registered (to add more).
func (r *Recorder) Registry() *prometheus.Registry { return r.reg }

// Handler serves the metrics in Prometheus' text format.
func (r *Recorder) Handler() http.Handler { return r.handler }

// BeforeScrape sets what runs before the byte counters are collected:
// the daemon has the proxy report its open connections' progress
// (proxy.Proxy.ReportProgress), so that they move while long-lived
// connections are open, as Istio's do.
func (r *Recorder) BeforeScrape(f func()) { r.beforeScrape.Store(&f) }

func (r *Recorder) runBeforeScrape() {
	if f := r.beforeScrape.Load(); f != nil {
		(*f)()
	}
}

// scrapeFirst collects vecs after running run.
type scrapeFirst struct {
	run  func()
	vecs []*prometheus.CounterVec
}

func (s *scrapeFirst) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range s.vecs {
		v.Describe(ch)
	}
}

func (s *scrapeFirst) Collect(ch chan<- prometheus.Metric) {
	s.run()
	for _, v := range s.vecs {
		v.Collect(ch)
	}
}

// Opened counts an admitted connection.
func (r *Recorder) Opened(c *proxy.ConnInfo) {
	r.opened.WithLabelValues(r.labels(c)...).Inc()
}

// Progress adds an open connection's new bytes.
func (r *Recorder) Progress(c *proxy.ConnInfo, b proxy.Bytes) {
	r.addBytes(r.labels(c), b)
}

// addBytes adds b to the byte counters of labels l: what the client sent
// is Istio's received bytes, what it got back Istio's sent bytes.
func (r *Recorder) addBytes(l []string, b proxy.Bytes) {
	r.received.WithLabelValues(l...).Add(float64(max(b.Sent, 0)))
	r.sent.WithLabelValues(l...).Add(float64(max(b.Received, 0)))
}

// Closed counts a finished connection, adds its unreported bytes and
// writes its access line with its totals.
func (r *Recorder) Closed(c *proxy.ConnInfo, total, unreported proxy.Bytes, err error) {
	l := r.labels(c)
	r.closed.WithLabelValues(l...).Inc()
	r.addBytes(l, unreported)
	attrs := append(r.attrs(c, l), slog.Int64("sent", total.Received), slog.Int64("received", total.Sent))
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "connection complete", attrs...)
}

// Refused writes the access line of a connection refused before it was
// opened (it is not counted as opened or closed, as in Istio).
func (r *Recorder) Refused(c *proxy.ConnInfo, reason error) {
	l := r.labels(c)
	r.refused.WithLabelValues(string(c.Direction), refusal(reason)).Inc()
	attrs := append(r.attrs(c, l), slog.String("err", reason.Error()))
	r.log.LogAttrs(context.Background(), slog.LevelInfo, "connection refused", attrs...)
}

func refusal(err error) string {
	switch {
	case errors.Is(err, proxy.ErrDenied):
		return "policy"
	case errors.Is(err, proxy.ErrNotReady):
		return "not_ready"
	}
	return "error"
}

// attrs is the access line of c (l are its metric labels).
func (r *Recorder) attrs(c *proxy.ConnInfo, l []string) []slog.Attr {
	return []slog.Attr{
		slog.Uint64("conn", c.ID), slog.String("direction", l[0]),
		slog.String("src", c.Src.String()), slog.String("src_workload", l[1]), slog.String("src_namespace", l[4]),
		slog.String("identity", l[5]),
		slog.String("dst", c.Dst.String()), slog.String("dst_service", l[9]), slog.String("dst_workload", l[12]),
		slog.String("dst_namespace", l[15]), slog.String("dst_identity", l[16]),
		slog.String("via", c.Via), slog.String("security", l[22]),
		slog.Float64("duration_ms", float64(r.now().Sub(c.Start).Microseconds())/1000),
	}
}

// labels are c's values of tcpLabels.
func (r *Recorder) labels(c *proxy.ConnInfo) []string {
	src, dst := c.SrcWorkload, c.DstWorkload
	security := None
	if c.MTLS {
		security = MutualTLS
	}
	svcHost, svcNS, svcName := Unknown, Unknown, Unknown
	if s := r.service(c); s != nil {
		svcHost, svcNS, svcName = s.Hostname, s.Namespace, s.Name
	}
	return []string{
		string(c.Direction),
		workloadName(src), canonical(src), revision(src), namespace(src),
		principal(c.SrcIdentity), canonical(src), revision(src), cluster(src),
		svcHost, svcNS, svcName,
		workloadName(dst), canonical(dst), revision(dst),
		namespace(dst), principal(c.DstIdentity), canonical(dst), revision(dst),
		cluster(dst),
		"tcp", "-", security,
	}
}

// service is the Service c was addressed to: the VIP it was sent to, or
// (inbound, where the address is the pod's) the only service of the
// destination workload with that target port.
func (r *Recorder) service(c *proxy.ConnInfo) *state.Service {
	if r.services == nil {
		return nil
	}
	if s := r.services.ServiceByVIP(c.Dst.Addr()); s != nil {
		return s
	}
	if c.DstWorkload == nil {
		return nil
	}
	var found *state.Service
	for key, ports := range c.DstWorkload.Services {
		for _, p := range ports {
			if p.TargetPort != c.Dst.Port() {
				continue
			}
			if found != nil {
				return nil // ambiguous
			}
			if found = r.services.ServiceByKey(key); found == nil {
				return nil
			}
			break
		}
	}
	return found
}

func workloadName(w *state.Workload) string {
	switch {
	case w == nil:
		return Unknown
	case w.WorkloadName != "":
		return w.WorkloadName
	}
	return w.Name
}

func canonical(w *state.Workload) string {
	if w == nil || w.CanonicalName == "" {
		return workloadName(w)
	}
	return w.CanonicalName
}

func revision(w *state.Workload) string {
	switch {
	case w == nil:
		return Unknown
	case w.CanonicalRevision == "":
		return "latest"
	}
	return w.CanonicalRevision
}

func namespace(w *state.Workload) string {
	if w == nil {
		return Unknown
	}
	return w.Namespace
}

func cluster(w *state.Workload) string {
	if w == nil {
		return Unknown
	}
	return Cluster
}

func principal(id spiffeid.ID) string {
	if id.IsZero() {
		return Unknown
	}
	return id.String()
}
