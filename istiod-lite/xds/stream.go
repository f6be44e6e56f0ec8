package xds

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// knownTypes are the type URLs the server serves.
var knownTypes = []string{workload.AddressType, workload.AuthorizationType, workload.RouteType}

// subscription is one type's state on one stream.
type subscription struct {
	wildcard bool
	names    map[string]bool
	// sent maps each resource the client has (as far as the server knows) to its version.
	sent map[string]string
	// answered is set once a response went out; the first one is sent even if empty so
	// that the client knows it is in sync.
	answered bool
}

// stream is the protocol state of one subscriber, apart from gRPC so that it can be
// tested and fuzzed directly. It is used by one goroutine.
type stream struct {
	proxy Proxy
	subs  map[string]*subscription
	nonce uint64
	// inflight maps the nonces not yet acknowledged to their type URL.
	inflight map[string]string
}

func newStream(p Proxy) *stream {
	return &stream{proxy: p, subs: map[string]*subscription{}, inflight: map[string]string{}}
}

// ack is the outcome of a request that answered a response.
type ack struct {
	typeURL string
	nonce   string
	// nack is the client's error detail when it rejected the response.
	nack string
}

// handle applies one request and returns what to send for it with the current view
// (nil before the first model), plus the ACK or NACK it carried, if any.
func (s *stream) handle(req *discovery.DeltaDiscoveryRequest, view model.Resources) ([]*discovery.DeltaDiscoveryResponse, *ack, error) {
	t := req.GetTypeUrl()
	if !slices.Contains(knownTypes, t) {
		return nil, nil, fmt.Errorf("unknown type URL %q (served: %v)", t, knownTypes)
	}
	var a *ack
	if n := req.GetResponseNonce(); n != "" {
		a = &ack{typeURL: t, nonce: n}
		if d := req.GetErrorDetail(); d != nil {
			a.nack = d.GetMessage()
			if a.nack == "" {
				a.nack = fmt.Sprintf("code %d", d.GetCode())
			}
		}
		delete(s.inflight, n)
	}
	sub := s.subs[t]
	first := sub == nil
	if first {
		sub = &subscription{names: map[string]bool{}, sent: map[string]string{}}
		s.subs[t] = sub
		// A client resuming after a reconnect says what it has; only differences follow.
		maps.Copy(sub.sent, req.GetInitialResourceVersions())
	}
	changed := first
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			changed = changed || !sub.wildcard
			sub.wildcard = true
		} else if !sub.names[n] {
			sub.names[n] = true
			changed = true
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			changed = changed || sub.wildcard
			sub.wildcard = false
		} else if sub.names[n] {
			delete(sub.names, n)
			changed = true
		}
	}
	if first && len(req.GetResourceNamesSubscribe()) == 0 {
		// The legacy way to ask for everything: an initial request naming nothing.
		sub.wildcard = true
	}
	if !changed || view == nil {
		return nil, a, nil
	}
	if r := s.diff(t, sub, view[t]); r != nil {
		return []*discovery.DeltaDiscoveryResponse{r}, a, nil
	}
	return nil, a, nil
}

// push returns what to send after the view changed.
func (s *stream) push(view model.Resources) []*discovery.DeltaDiscoveryResponse {
	var out []*discovery.DeltaDiscoveryResponse
	for _, t := range knownTypes {
		if sub := s.subs[t]; sub != nil {
			if r := s.diff(t, sub, view[t]); r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// diff computes the response that brings the client from what it has to what it
// should have, or nil if it is already there.
func (s *stream) diff(t string, sub *subscription, view map[string]*model.Resource) *discovery.DeltaDiscoveryResponse {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: t}
	want := func(name string) bool { return sub.wildcard || sub.names[name] }
	// Walk the maps unsorted (a view has thousands of entries) and sort only what changed.
	var changed []*model.Resource
	for name, r := range view {
		if r != nil && want(name) && sub.sent[name] != r.Version {
			changed = append(changed, r)
		}
	}
	slices.SortFunc(changed, func(a, b *model.Resource) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range changed {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: r.Name, Version: r.Version, Resource: r.Any})
		sub.sent[r.Name] = r.Version
	}
	for name := range sub.sent {
		if r := view[name]; r == nil || !want(name) {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	slices.Sort(resp.RemovedResources)
	for _, name := range resp.RemovedResources {
		delete(sub.sent, name)
	}
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && sub.answered {
		return nil
	}
	sub.answered = true
	s.nonce++
	resp.Nonce = strconv.FormatUint(s.nonce, 10)
	s.inflight[resp.Nonce] = t
	return resp
}
