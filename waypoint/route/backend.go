package route

import (
	"math/rand/v2"
	"regexp"
)

// PickBackend chooses one of the rule's backends with probability
// proportional to its weight, using rnd. ok is false when there is none to
// choose (no backends, or all weights zero).
func (r *Rule) PickBackend(rnd *rand.Rand) (b *Backend, ok bool) {
	total := 0
	for i := range r.Backends {
		total += r.Backends[i].Weight
	}
	if total <= 0 {
		return nil, false
	}
	n := rnd.IntN(total)
	for i := range r.Backends {
		if n < r.Backends[i].Weight {
			return &r.Backends[i], true
		}
		n -= r.Backends[i].Weight
	}
	return nil, false // unreachable
}

// GRPCMethod turns a GRPCRoute method match into the path match it stands
// for: gRPC calls are POSTs to /<service>/<method>. Service or method may
// be empty (any); with regex they are RE2 patterns.
func GRPCMethod(service, method string, regex bool) PathMatch {
	switch {
	case service == "" && method == "":
		return PathMatch{Type: PathPrefix, Value: "/"}
	case regex:
		if service == "" {
			service = `[^/]+`
		}
		if method == "" {
			method = `[^/]+`
		}
		return PathMatch{Type: PathRegex, Value: `/` + service + `/` + method}
	case method == "":
		return PathMatch{Type: PathPrefix, Value: "/" + service}
	case service == "":
		return PathMatch{Type: PathRegex, Value: `/[^/]+/` + regexp.QuoteMeta(method)}
	}
	return PathMatch{Type: PathExact, Value: "/" + service + "/" + method}
}
