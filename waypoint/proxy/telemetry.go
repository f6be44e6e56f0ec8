package proxy

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/telemetry"
)

// finish records the metrics and access log line of a request.
func (p *Proxy) finish(w *recorder, r *http.Request, ex *exchange) {
	dur := time.Since(ex.start)
	status := w.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	l := p.labels(ex)
	l.ResponseCode = status
	l.RequestProtocol = "http"
	if isGRPC(r) {
		l.RequestProtocol = "grpc"
		l.GRPCResponseStatus = grpcStatus(w.Header())
	}
	reqBytes := ex.reqBytes.n.Load()
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.RecordRequest(&l, dur, reqBytes, w.bytes)
	}
	if p.log.Enabled(r.Context(), slog.LevelInfo) {
		upstream := "-"
		if ex.endpoint != nil {
			upstream = ex.endpoint.addr.String()
		}
		dest := "-"
		if ex.dest != nil {
			dest = ex.dest.name
		}
		p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.RequestURI()),
			slog.String("protocol", r.Proto),
			slog.Int("status", status),
			slog.String("flags", orDash(ex.flags)),
			slog.Int64("bytes_received", reqBytes),
			slog.Int64("bytes_sent", w.bytes),
			slog.Duration("duration", dur),
			slog.String("src", remoteOf(ex)),
			slog.String("identity", l.SourcePrincipal),
			slog.String("dst", dest),
			slog.String("upstream", upstream),
			slog.Int("attempts", ex.attempts),
			slog.String("traceparent", r.Header.Get("Traceparent")),
		)
	}
}

// labels fills Istio's labels from what the exchange learned.
func (p *Proxy) labels(ex *exchange) telemetry.Labels {
	l := telemetry.Labels{ConnectionSecurityPolicy: "mutual_tls", ResponseFlags: ex.flags}
	if !ex.info.peer.IsZero() {
		l.SourcePrincipal = ex.info.peer.String()
		if rest, ok := strings.CutPrefix(ex.info.peer.Path(), "/ns/"); ok {
			l.SourceWorkloadNamespace, _, _ = strings.Cut(rest, "/")
		}
	}
	st := p.state.Load()
	if ex.info.source.IsValid() {
		if w := st.byIP[ex.info.source]; w != nil {
			l.SourceWorkload, l.SourceWorkloadNamespace = or(w.WorkloadName, w.Name), w.Namespace
			l.SourceCanonicalService, l.SourceCanonicalRevision = w.CanonicalService, w.CanonicalRevision
			l.SourceApp, l.SourceVersion = w.CanonicalService, w.CanonicalRevision
		}
	}
	if ex.dest != nil && ex.dest.service != nil {
		svc := ex.dest.service
		l.DestinationService, l.DestinationServiceName, l.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	if ex.backend != nil { // the backend a route chose may differ from the destination
		svc := ex.backend.service
		l.DestinationService, l.DestinationServiceName, l.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	if ep := ex.endpoint; ep != nil {
		w := ep.workload
		l.DestinationPrincipal = ep.identity.String()
		l.DestinationWorkload, l.DestinationWorkloadNamespace = or(w.WorkloadName, w.Name), w.Namespace
		l.DestinationCanonicalService, l.DestinationCanonicalRevision = w.CanonicalService, w.CanonicalRevision
		l.DestinationApp, l.DestinationVersion = w.CanonicalService, w.CanonicalRevision
	}
	return l
}

// grpcStatus finds grpc-status among the response headers or the
// trailers ReverseProxy wrote.
func grpcStatus(h http.Header) string {
	if v := h.Get("Grpc-Status"); v != "" {
		return v
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
