package telemetry

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Ready is ztunnel's readiness: a set of named conditions that must all
// have been met once (ready stays ready: the proxy keeps serving its last
// configuration when istiod-lite or the node agent goes away).
type Ready struct {
	mu      sync.Mutex
	pending []string
}

// NewReady returns a Ready waiting for conditions.
func NewReady(conditions ...string) *Ready {
	return &Ready{pending: slices.Clone(conditions)}
}

// Done marks condition as met.
func (r *Ready) Done(condition string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = slices.DeleteFunc(r.pending, func(c string) bool { return c == condition })
}

// Pending lists the conditions not met yet.
func (r *Ready) Pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pending)
}

// ServeHTTP answers 200 when every condition is met, else 503 naming the
// missing ones.
func (r *Ready) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if p := r.Pending(); len(p) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: waiting for %s\n", strings.Join(p, ", "))
		return
	}
	fmt.Fprintln(w, "ready")
}
