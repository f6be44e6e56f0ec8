package telemetry

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// Sources are what the config dump shows; each may be nil.
type Sources struct {
	Node         string
	Tables       func() state.Dump
	Certificates func() []identity.Certificate
	Pods         func() []proxy.PodInfo
}

// ConfigDump is the admin config dump (GET /config_dump).
type ConfigDump struct {
	Node      string     `json:"node"`
	Version   uint64     `json:"version"`
	Workloads []Workload `json:"workloads"`
	Services  []Service  `json:"services"`
	Policies  []string   `json:"policies"`
	// Pods are the enrolled pods this ztunnel serves.
	Pods         []Pod                  `json:"pods"`
	Certificates []identity.Certificate `json:"certificates"`
	Time         time.Time              `json:"time"`
}

// Workload is a workload in the config dump.
type Workload struct {
	UID            string                  `json:"uid"`
	Name           string                  `json:"name"`
	Namespace      string                  `json:"namespace"`
	Addresses      []netip.Addr            `json:"addresses"`
	Node           string                  `json:"node,omitempty"`
	Protocol       string                  `json:"protocol"`
	Identity       string                  `json:"identity,omitempty"`
	ServiceAccount string                  `json:"serviceAccount,omitempty"`
	Healthy        bool                    `json:"healthy"`
	Waypoint       *state.Waypoint         `json:"waypoint,omitempty"`
	Services       map[string][]state.Port `json:"services,omitempty"`
	Policies       []string                `json:"authorizationPolicies,omitempty"`
}

// Service is a service in the config dump.
type Service struct {
	Name      string          `json:"name"`
	Namespace string          `json:"namespace"`
	Hostname  string          `json:"hostname"`
	VIPs      []netip.Addr    `json:"vips"`
	Ports     []state.Port    `json:"ports"`
	Waypoint  *state.Waypoint `json:"waypoint,omitempty"`
}

// Pod is an enrolled pod in the config dump.
type Pod struct {
	UID         string `json:"uid"`
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Identity    string `json:"identity"`
	Connections int    `json:"connections"`
}

// Dump collects the config dump now.
func (s Sources) Dump(now time.Time) ConfigDump {
	d := ConfigDump{Node: s.Node, Time: now, Workloads: []Workload{}, Services: []Service{}, Policies: []string{},
		Pods: []Pod{}, Certificates: []identity.Certificate{}}
	if s.Tables != nil {
		t := s.Tables()
		d.Version = t.Version
		d.Policies = append(d.Policies, t.Policies...)
		for _, w := range t.Workloads {
			proto := "TCP"
			if w.HBONE {
				proto = "HBONE"
			}
			var id string
			if !w.Identity.IsZero() {
				id = w.Identity.String()
			}
			d.Workloads = append(d.Workloads, Workload{UID: w.UID, Name: w.Name, Namespace: w.Namespace,
				Addresses: slices.Clone(w.Addresses), Node: w.Node, Protocol: proto, Identity: id,
				ServiceAccount: w.ServiceAccount, Healthy: w.Healthy, Waypoint: w.Waypoint, Services: w.Services,
				Policies: w.Policies})
		}
		for _, sv := range t.Services {
			d.Services = append(d.Services, Service{Name: sv.Name, Namespace: sv.Namespace, Hostname: sv.Hostname,
				VIPs: slices.Clone(sv.VIPs), Ports: sv.Ports, Waypoint: sv.Waypoint})
		}
	}
	if s.Pods != nil {
		for _, p := range s.Pods() {
			d.Pods = append(d.Pods, Pod(p))
		}
	}
	if s.Certificates != nil {
		d.Certificates = append(d.Certificates, s.Certificates()...)
	}
	return d
}

// ServeHTTP serves the dump as indented JSON.
func (s Sources) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.Dump(time.Now())) // the client went away
}
