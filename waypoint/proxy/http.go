package proxy

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

// exchange is one request's journey through the proxy.
type exchange struct {
	start    time.Time
	info     *connInfo
	dest     *destination
	backend  *backend
	endpoint *endpoint // the last one tried
	rule     *route.Rule
	bkRef    *route.Backend
	path     string // normalized, rewritten: what the upstream gets
	host     string
	flags    string // Envoy response flags
	attempts int
	body     *replayBody
	reqBytes *countingBody
}

type exchangeKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP serves one request from a tunnel.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{start: time.Now(), info: connInfoFrom(r.Context())}
	rec := &recorder{ResponseWriter: w}
	ex.reqBytes = &countingBody{ReadCloser: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = ex.reqBytes
	}
	ctx, span := p.cfg.Tracing.Start(r.Context(), r)
	if p.cfg.StreamIdleTimeout > 0 && r.Header.Get("Upgrade") == "" {
		// An upgraded connection (WebSocket) is relayed outside this exchange.
		var g *idleGuard
		ctx, g = guardIdle(ctx, w, p.cfg.StreamIdleTimeout)
		rec.idle, ex.reqBytes.idle = g, g
		defer g.stop()
	}
	r = r.WithContext(context.WithValue(ctx, exchangeKey{}, ex))
	p.serve(rec, r, ex)
	span.End()
	p.finish(rec, r, ex)
}

func (p *Proxy) serve(w *recorder, r *http.Request, ex *exchange) {
	st := p.state.Load()
	dest := st.lookup(ex.info.target)
	if dest == nil {
		ex.flags = "NR"
		http.Error(w, "no such destination", http.StatusServiceUnavailable)
		return
	}
	ex.dest = dest
	path, err := route.NormalizePath(r.URL.EscapedPath())
	if err != nil && r.Method == http.MethodOptions && r.URL.Path == "*" {
		path, err = "*", nil
	}
	if err != nil {
		http.Error(w, "bad request path", http.StatusBadRequest)
		return
	}
	ex.path, ex.host = path, r.Host

	d := dest.policies.Evaluate(&authz.Request{
		Peer:            ex.info.peer,
		SourceIP:        ex.info.source,
		DestinationIP:   ex.info.target.Addr(),
		DestinationPort: ex.info.target.Port(),
		HTTP:            true,
		Host:            r.Host,
		Method:          r.Method,
		Path:            path,
		Header:          r.Header,
	})
	if len(d.DryRun) > 0 {
		p.log.Info("dry-run authorization policies matched", "policies", d.DryRun, "dst", dest.name, "allow", d.Allow)
	}
	if !d.Allow {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, authz.DeniedBody)
		return
	}

	rule, match := &dest.fallback, (*route.Match)(nil)
	if dest.routes != nil {
		sel, ok := dest.routes.Select(&route.Request{Host: r.Host, Method: r.Method, Path: path, Header: r.Header, Query: r.URL.Query()})
		if !ok {
			ex.flags = "NR"
			w.WriteHeader(http.StatusNotFound)
			return
		}
		rule, match = sel.Rule, sel.Match
	}
	ex.rule = rule
	f := &rule.Filters
	if f.Redirect != nil {
		loc, code := f.Redirect.Location("http", r.Host, path, r.URL.RawQuery, match)
		w.Header().Set("Location", loc)
		w.WriteHeader(code)
		return
	}
	f.RequestHeaders.Apply(r.Header)
	if f.Rewrite != nil {
		ex.path = f.Rewrite.RewritePath(path, match)
		if f.Rewrite.Hostname != "" {
			ex.host = f.Rewrite.Hostname
		}
	}

	var (
		b   *backend
		ref *route.Backend
	)
	if dest.workload == nil {
		var ok bool
		p.rndMu.Lock()
		ref, ok = rule.PickBackend(p.rnd)
		p.rndMu.Unlock()
		if !ok {
			http.Error(w, "no backend", http.StatusInternalServerError)
			return
		}
		if ref.Unresolved != "" {
			// A backendRef the control plane could not resolve (not permitted
			// by a ReferenceGrant, missing): its share gets 500 (Gateway API).
			ex.flags = "NC"
			p.log.Debug("unresolved backend", "dst", dest.name, "backend", ref.Key(), "why", ref.Unresolved)
			http.Error(w, "unresolved backend", http.StatusInternalServerError)
			return
		}
		if b = st.backends[ref.Key()]; b == nil {
			ex.flags = "NC"
			http.Error(w, "backend "+ref.Key()+" not found", http.StatusInternalServerError)
			return
		}
		ex.bkRef = ref
		ref.Filters.RequestHeaders.Apply(r.Header)
	}
	ex.backend = b

	ctx := r.Context()
	if t := rule.Timeouts.Request; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	if r.Body != nil && r.Body != http.NoBody {
		ex.body = newReplayBody(r.Body, p.cfg.RetryBufferBytes)
		if n := r.ContentLength; n > 0 && n <= int64(min(p.cfg.RetryBufferBytes, readAheadBytes)) && r.Header.Get("Expect") == "" {
			readAhead(ctx, w, ex.body, int(n))
		}
	}
	out := r
	if ctx != r.Context() {
		out = r.WithContext(ctx)
	}
	p.rp.ServeHTTP(w, out)
	p.mirror(r, ex, st)
}

// readAheadBytes bounds the bodies read before the upstream request starts
// (see replayBody.readAhead): those that fit, with their headers, in one
// write of the upstream connection.
const readAheadBytes = 16 << 10

// readAhead reads the first bytes of a body of known length before the
// upstream request starts; a request timeout interrupts the wait, as it
// would the upstream request's (the stream idle timeout does so itself).
func readAhead(ctx context.Context, w http.ResponseWriter, b *replayBody, length int) {
	if _, ok := ctx.Deadline(); ok {
		stop := context.AfterFunc(ctx, func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) })
		defer stop()
	}
	b.readAhead(length)
}

// outPath sets the path sent upstream: the normalized (maybe rewritten) path.
func outPath(u *url.URL, escaped string) {
	u.RawPath = escaped
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path = p
	}
	if u.Path == escaped {
		u.RawPath = ""
	}
}

// remoteOf reports the client address for logs.
func remoteOf(ex *exchange) string {
	if ex.info.source.IsValid() {
		return ex.info.source.String()
	}
	return "-"
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}
