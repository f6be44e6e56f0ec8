// Package metrics exposes istiod-lite's Prometheus metrics on 15014 with Istio's
// names: pilot_xds_pushes, pilot_proxy_convergence_time, pilot_xds (connected
// proxies), pilot_total_xds_rejects, plus the model's size.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ambit-mesh/ambit/istiod-lite/model"
	"github.com/ambit-mesh/ambit/istiod-lite/xds"
)

// Metrics is istiod-lite's registry; it implements xds.Observer.
type Metrics struct {
	reg         *prometheus.Registry
	pushes      *prometheus.CounterVec
	convergence prometheus.Histogram
	connected   *prometheus.GaugeVec
	rejects     *prometheus.CounterVec
	modelSize   *prometheus.GaugeVec
}

// New registers the metrics in a fresh registry (plus Go and process collectors).
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes", Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pilot_proxy_convergence_time", Help: "Seconds from a model update to a proxy being sent the change.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pilot_xds", Help: "Connected xDS subscribers, by proxy kind.",
		}, []string{"kind"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects", Help: "xDS responses rejected (NACKed) by proxies, by resource type.",
		}, []string{"type"}),
		modelSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambit_model_objects", Help: "Objects in the current model, by kind.",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.pushes, m.convergence, m.connected, m.rejects, m.modelSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Connected implements xds.Observer.
func (m *Metrics) Connected(p xds.Proxy) { m.connected.WithLabelValues(p.Kind.String()).Inc() }

// Disconnected implements xds.Observer.
func (m *Metrics) Disconnected(p xds.Proxy) { m.connected.WithLabelValues(p.Kind.String()).Dec() }

// Pushed implements xds.Observer.
func (m *Metrics) Pushed(_ xds.Proxy, typeURL string, _ int, latency time.Duration) {
	m.pushes.WithLabelValues(typeURL).Inc()
	if latency > 0 {
		m.convergence.Observe(latency.Seconds())
	}
}

// Rejected implements xds.Observer.
func (m *Metrics) Rejected(_ xds.Proxy, typeURL, _ string) { m.rejects.WithLabelValues(typeURL).Inc() }

// ModelBuilt records the size of a new model (a kube.Controller consumer).
func (m *Metrics) ModelBuilt(mod *model.Model) {
	m.modelSize.WithLabelValues("workload").Set(float64(len(mod.Workloads)))
	m.modelSize.WithLabelValues("service").Set(float64(len(mod.Services)))
	m.modelSize.WithLabelValues("policy").Set(float64(len(mod.Policies)))
	m.modelSize.WithLabelValues("waypoint").Set(float64(len(mod.Waypoints)))
}
