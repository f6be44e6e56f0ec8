package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/waypoint/lb"
	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/route"
)

// Errors the upstream side reports to the error handler.
var errNoHealthy = errors.New("no healthy upstream")

// connectError marks a failure to open the tunnel to an endpoint.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect error: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// dial opens a connection to the endpoint at addr, with p.dialer.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.dialer(ctx, network, addr)
}

// dialUpstream opens an HBONE tunnel to the endpoint at addr.
func (p *Proxy) dialUpstream(ctx context.Context, _, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, &connectError{fmt.Errorf("endpoint %q: %w", addr, err)}
	}
	ep := p.state.Load().endpoints[ap]
	if ep == nil {
		if ex := exchangeFrom(ctx); ex != nil && ex.endpoint != nil && ex.endpoint.addr == ap {
			ep = ex.endpoint
		} else {
			return nil, &connectError{fmt.Errorf("endpoint %s is gone", addr)}
		}
	}
	st, err := p.cfg.Dialer.Dial(ctx, hbone.Request{
		Source:      p.cfg.Identity,
		Destination: ep.identity,
		Server:      ep.hbone,
		Target:      ep.addr,
	})
	if err != nil {
		return nil, &connectError{err}
	}
	return st, nil
}

func (p *Proxy) reverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			ex := exchangeFrom(pr.In.Context())
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "upstream.invalid" // the transport picks the endpoint
			outPath(pr.Out.URL, ex.path)
			pr.Out.Host = ex.host
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
			p.cfg.Tracing.Inject(pr.Out.Context(), pr.Out.Header)
		},
		Transport:      roundTripFunc(p.roundTrip),
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorResponse,
		BufferPool:     newBufferPool(),
		ErrorLog:       slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelDebug),
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// roundTrip sends a request to an endpoint of the exchange's backend,
// retrying as the rule's policy allows within the backend's budget.
func (p *Proxy) roundTrip(out *http.Request) (*http.Response, error) {
	ex := exchangeFrom(out.Context())
	rule := ex.rule
	retry := rule.Retry
	if retry == nil {
		retry = route.DefaultRetry()
	}
	perTry := retry.PerTryTimeout
	if perTry == 0 {
		perTry = rule.Timeouts.BackendRequest
	}
	var tried []string
	if ex.backend != nil {
		ex.backend.load.active.Add(1)
		defer ex.backend.load.active.Add(-1)
	}
	upgrade := out.Header.Get("Upgrade") != ""
	for attempt := 0; ; attempt++ {
		ex.attempts = attempt + 1
		done, ep, err := p.pick(ex, tried)
		if err != nil {
			ex.flags = "UH"
			return nil, err
		}
		ex.endpoint = ep
		tried = append(tried, ep.addr.String())

		ctx, cancel := out.Context(), context.CancelFunc(func() {})
		if perTry > 0 {
			ctx, cancel = context.WithTimeout(ctx, perTry)
		}
		// A shallow copy: no client changes a request's headers, and the
		// URL is the only field an attempt sets.
		req := out.WithContext(ctx)
		u := *out.URL
		u.Host = ep.addr.String()
		req.URL = &u
		if ex.body != nil && out.Body != nil {
			req.Body = ex.body.attempt()
			if _, kept := ex.body.complete(); kept {
				// In memory: the transport may resend it on a fresh
				// connection if a reused one fails before the request is out.
				req.GetBody = func() (io.ReadCloser, error) { return ex.body.attempt(), nil }
			}
		}
		resp, err := p.transport(out, ex, req).RoundTrip(req)
		outcome, connFail, reset := classifyAttempt(resp, err, out.Context())
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		again := attempt < retry.Attempts && !upgrade &&
			retry.Retriable(status, connFail, reset) && out.Context().Err() == nil &&
			(ex.body == nil || ex.body.replayable()) && p.retryAllowed(ex.backend)
		if !again {
			if err != nil {
				done(outcome)
				cancel()
				ex.flags = failureFlags(err, connFail, attempt)
				return nil, err
			}
			resp.Body = wrapBody(resp.Body, func() { done(outcome); cancel() })
			return resp, nil
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
			resp.Body.Close()
		}
		done(outcome)
		cancel()
		if err := p.backoff(out.Context(), ex, retry, attempt); err != nil {
			return nil, err
		}
	}
}

// pick chooses the endpoint of an attempt.
func (p *Proxy) pick(ex *exchange, tried []string) (func(lb.Outcome), *endpoint, error) {
	if ex.dest.workload != nil { // workload-addressed: one endpoint
		return func(lb.Outcome) {}, ex.dest.workload, nil
	}
	h, ok := ex.backend.pool.Pick(tried...)
	if !ok {
		return nil, nil, fmt.Errorf("%w for %s", errNoHealthy, ex.backend.key)
	}
	return h.Done, h.Value(), nil
}

// retryAllowed takes a slot of the backend's retry budget for the
// duration of the backoff and next attempt (released by backoff's caller
// when the attempt ends: approximated by the backoff interval plus the
// attempt, see backoff).
func (p *Proxy) retryAllowed(b *backend) bool {
	if b == nil {
		return true
	}
	limit := max(int64(p.cfg.RetryBudget.Percent/100*float64(b.load.active.Load())), int64(p.cfg.RetryBudget.MinConcurrency))
	if b.load.retrying.Add(1) > limit {
		b.load.retrying.Add(-1)
		return false
	}
	return true
}

// backoff waits before a retry: at least the base (the Gateway API's
// minimum), exponential with jitter (retry n waits between base*2^n and
// base*2^(n+1)), at most ten times the base. It releases the retry budget
// slot taken by retryAllowed once the wait is over (the retry is then an
// ordinary attempt).
func (p *Proxy) backoff(ctx context.Context, ex *exchange, retry *route.Retry, attempt int) error {
	if ex.backend != nil {
		defer ex.backend.load.retrying.Add(-1)
	}
	base := retry.Backoff
	if base == 0 {
		base = p.cfg.RetryBackoff
	}
	t := time.NewTimer(backoffDelay(base, attempt, rand.Int64N))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting to retry: %w", ctx.Err())
	}
}

// backoffDelay is the wait before retry attempt+1; randN(n) returns a
// number in [0, n).
func backoffDelay(base time.Duration, attempt int, randN func(int64) int64) time.Duration {
	limit := 10 * base
	lo := min(base<<min(attempt, 4), limit)
	hi := min(2*lo, limit)
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(randN(int64(hi-lo)+1))
}

// transport chooses HTTP/2 (h2c) upstream for HTTP/2 clients and
// services declared HTTP/2 (gRPC), HTTP/1.1 otherwise: sent whole by p.h1
// when it can, else streamed by net/http's Transport.
func (p *Proxy) transport(in *http.Request, ex *exchange, req *http.Request) http.RoundTripper {
	if in.Header.Get("Upgrade") != "" {
		return p.upH1
	}
	if in.ProtoMajor == 2 || ex.backend != nil && ex.backend.port.Protocol == model.HTTP2 {
		return p.upH2
	}
	if p.h1.handles(req) {
		return p.h1
	}
	return p.upH1
}

// classifyAttempt tells the load balancer and the retry policy what an
// attempt's result means.
func classifyAttempt(resp *http.Response, err error, client context.Context) (o lb.Outcome, connFail, reset bool) {
	var ce *connectError
	switch {
	case err == nil && resp.StatusCode >= 500:
		return lb.ServerError, false, false
	case err == nil:
		return lb.Success, false, false
	case client.Err() != nil:
		return lb.Abandoned, false, false
	case errors.As(err, &ce):
		return lb.ConnectFailure, true, false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return lb.ServerError, false, true // a per-try timeout: retriable like a reset
	}
	return lb.ConnectFailure, false, true
}

func failureFlags(err error, connFail bool, attempt int) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "UT"
	case connFail && attempt > 0:
		return "URX"
	case connFail:
		return "UF"
	}
	return "UC"
}

// errorResponse answers a request that got no upstream response, as Envoy
// words it.
func (p *Proxy) errorResponse(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	code, msg := http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers"
	switch {
	case errors.Is(context.Cause(r.Context()), errStreamIdle):
		// Envoy's answers: 408 while the client still owes the body, else 504.
		ex.flags, code, msg = "SI", http.StatusGatewayTimeout, "stream timeout"
		if r.Body != nil && r.Body != http.NoBody && !ex.reqBytes.eof.Load() {
			code = http.StatusRequestTimeout
		}
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		ex.flags = "DC"
		code, msg = 499, "client disconnected"
	case errors.Is(err, context.DeadlineExceeded):
		ex.flags = "UT"
		code, msg = http.StatusGatewayTimeout, "upstream request timeout"
	case errors.Is(err, errNoHealthy):
		code, msg = http.StatusServiceUnavailable, "no healthy upstream"
	}
	p.log.Debug("upstream request failed", "dst", ex.dest.name, "err", err)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// modifyResponse applies the rule's and backend's response header filters.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	ex := exchangeFrom(resp.Request.Context())
	if ex == nil {
		return nil
	}
	if ex.rule != nil {
		ex.rule.Filters.ResponseHeaders.Apply(resp.Header)
	}
	if ex.bkRef != nil {
		ex.bkRef.Filters.ResponseHeaders.Apply(resp.Header)
	}
	return nil
}

// wrapBody calls done once when the body is closed, keeping the
// ReadWriteCloser of a 101 Switching Protocols body visible.
func wrapBody(b io.ReadCloser, done func()) io.ReadCloser {
	var once sync.Once
	cb := closeBody{ReadCloser: b, done: func() { once.Do(done) }}
	if rwc, ok := b.(io.ReadWriteCloser); ok {
		return &closeRWBody{closeBody: cb, w: rwc}
	}
	return &cb
}

type closeBody struct {
	io.ReadCloser
	done func()
}

func (b *closeBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

type closeRWBody struct {
	closeBody
	w io.Writer
}

func (b *closeRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{ pool *sync.Pool }

func newBufferPool() bufferPool {
	return bufferPool{&sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (bp bufferPool) Get() []byte  { return *(bp.pool.Get().(*[]byte)) }
func (bp bufferPool) Put(b []byte) { bp.pool.Put(&b) }
