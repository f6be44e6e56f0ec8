package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// h1Client sends the HTTP/1.1 requests that need no streaming upstream (no
// body, or one held whole in memory) and reads their responses in the
// caller's goroutine, over pooled tunnels. net/http's Transport hands every
// request to a writer goroutine and every response over from a reader
// goroutine, and wakes that reader again when the body is read: four
// goroutine hand-offs per request, most of which wake a sleeping thread
// when the waypoint is not saturated. Here the request is one write and the
// response is read where it is used.
//
// An idle connection has no goroutine watching it, so a server closing it
// goes unnoticed until it is used next (the Transport's reader goroutine
// notices at once). Hence, as the Transport does for requests it knows to
// be idempotent, a request that finds a reused connection dead before any
// byte of an answer is sent again on a new connection, and a request that
// may not be sent twice takes an idle connection only if it was used in
// the last hotIdle (servers close idle keep-alive connections after
// seconds, not sooner); finding none, it closes the staler ones and dials.
type h1Client struct {
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle        int           // idle connections kept per endpoint
	idleTimeout    time.Duration // an idle connection is closed after this
	maxHeaderBytes int64         // response headers, 1xx included

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by endpoint, most recently used last
	closed bool
}

// hotIdle is how recently an idle connection must have been used to carry
// a request that may not be resent (see h1Client).
const hotIdle = time.Second

// maxInformational bounds the 1xx responses read before the final one.
const maxInformational = 5

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, idleTimeout time.Duration, maxHeaderBytes int64) *h1Client {
	return &h1Client{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, maxHeaderBytes: maxHeaderBytes, idle: map[string][]*h1Conn{}}
}

// handles reports whether the client can send req: an HTTP/1.1 request
// with no body or one in memory (GetBody set), no trailers, no upgrade and
// no Expect: 100-continue. The others go to net/http's Transport.
func (c *h1Client) handles(req *http.Request) bool {
	return (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) &&
		len(req.Trailer) == 0 && req.Header.Get("Upgrade") == "" && req.Header.Get("Expect") == ""
}

// RoundTrip sends req (one handles accepts) to req.URL.Host.
func (c *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	resend := replayable(req)
	for fresh := false; ; fresh = true {
		pc, err := c.get(ctx, req.URL.Host, resend, fresh)
		if err != nil {
			return nil, err
		}
		resp, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		// As net/http's Transport: a new connection failing is an answer.
		var dead *deadConnError
		if fresh || !pc.reused || !errors.As(err, &dead) || ctx.Err() != nil || !resend && !dead.unsent {
			return nil, err
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// replayable reports whether req may be sent twice (net/http's rule): an
// idempotent method or an idempotency key.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// get returns an idle connection to addr, or a new one if fresh is set,
// none is idle, or (resend false) none was used recently enough.
func (c *h1Client) get(ctx context.Context, addr string, resend, fresh bool) (*h1Conn, error) {
	if !fresh {
		if pc := c.takeIdle(addr, resend); pc != nil {
			return pc, nil
		}
	}
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{client: c, addr: addr, nc: nc}
	pc.br = bufio.NewReader(&pc.lr)
	pc.lr.r = nc
	return pc, nil
}

func (c *h1Client) takeIdle(addr string, resend bool) *h1Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		conns := c.idle[addr]
		if len(conns) == 0 {
			return nil
		}
		pc := conns[len(conns)-1]
		if !resend && time.Since(pc.idleSince) > hotIdle {
			// The others were used even longer ago. Close them all rather
			// than let requests like this one add a connection each.
			for _, o := range conns {
				o.timer.Stop()
				o.nc.Close()
			}
			delete(c.idle, addr)
			return nil
		}
		conns[len(conns)-1] = nil
		c.setIdleLocked(addr, conns[:len(conns)-1])
		if pc.timer.Stop() {
			pc.reused = true
			return pc
		}
		// Its idle timeout fired and waits for c.mu; it will not find pc.
		pc.nc.Close()
	}
}

func (c *h1Client) setIdleLocked(addr string, conns []*h1Conn) {
	if len(conns) == 0 {
		delete(c.idle, addr)
		return
	}
	c.idle[addr] = conns
}

// put makes pc idle, or closes it if the pool is full or closed.
func (c *h1Client) put(pc *h1Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := c.idle[pc.addr]
	if c.closed || len(conns) >= c.maxIdle {
		pc.nc.Close()
		return
	}
	pc.idleSince = time.Now()
	if pc.timer == nil {
		pc.timer = time.AfterFunc(c.idleTimeout, func() { c.expire(pc) })
	} else {
		pc.timer.Reset(c.idleTimeout)
	}
	c.idle[pc.addr] = append(conns, pc)
}

// expire closes pc if it is still idle.
func (c *h1Client) expire(pc *h1Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	conns := c.idle[pc.addr]
	for i, o := range conns {
		if o == pc {
			c.setIdleLocked(pc.addr, append(conns[:i:i], conns[i+1:]...))
			pc.nc.Close()
			return
		}
	}
}

// CloseIdleConnections closes the idle connections; with stop set, it also
// closes those that become idle later.
func (c *h1Client) CloseIdleConnections(stop bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = c.closed || stop
	for addr, conns := range c.idle {
		for _, pc := range conns {
			pc.timer.Stop()
			pc.nc.Close()
		}
		delete(c.idle, addr)
	}
}

// h1Conn is one upstream connection.
type h1Conn struct {
	client    *h1Client
	addr      string
	nc        net.Conn
	lr        limitedReader // under br: bounds what response headers may take
	br        *bufio.Reader
	reused    bool
	idleSince time.Time
	timer     *time.Timer // idle timeout, armed while idle
}

// deadConnError is a connection that failed before any byte of an answer
// came back; unsent is set if the request did not go out either.
type deadConnError struct {
	err    error
	unsent bool
}

func (e *deadConnError) Error() string { return "upstream connection closed: " + e.err.Error() }
func (e *deadConnError) Unwrap() error { return e.err }

// aLongTimeAgo is a deadline in the past: it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

var requestBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// roundTrip writes req on pc and reads the response's head. The body, read
// by the caller, gives the connection back when it ends.
func (pc *h1Conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Cancellation (client gone, request or per-try timeout, stream idle)
	// interrupts whatever pc is blocked in; the connection is then closed.
	stop := context.AfterFunc(ctx, func() { _ = pc.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream request: %w", ctx.Err())
		}
		return nil, err
	}

	// One write: the request line, headers and body.
	buf := requestBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			requestBuffers.Put(buf)
		}
	}()
	if err := req.Write(buf); err != nil {
		return fail(fmt.Errorf("upstream request: %w", err))
	}
	if _, err := pc.nc.Write(buf.Bytes()); err != nil {
		return fail(&deadConnError{err: err, unsent: true})
	}

	pc.lr.n, pc.lr.read = pc.client.maxHeaderBytes, 0
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for i := 0; ; i++ {
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			if pc.lr.read == 0 && pc.br.Buffered() == 0 && pc.reused {
				err = &deadConnError{err: err}
			}
			return fail(err)
		}
		code := resp.StatusCode
		if code >= 200 {
			break
		}
		if code == http.StatusSwitchingProtocols || i == maxInformational {
			return fail(fmt.Errorf("upstream sent %d", code))
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	pc.lr.n = -1
	reuse := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		pc.release(stop, reuse)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, pc: pc, stop: stop, reuse: reuse, ctx: ctx}
	return resp, nil
}

// release ends pc's exchange: idle again if it may be reused and its
// cancellation did not fire, else closed.
func (pc *h1Conn) release(stop func() bool, reuse bool) {
	if stop() && reuse && pc.br.Buffered() == 0 {
		pc.client.put(pc)
		return
	}
	pc.nc.Close()
}

// h1Body is a response body; read to its end, it gives its connection back.
type h1Body struct {
	rc    io.ReadCloser
	pc    *h1Conn
	stop  func() bool
	reuse bool
	ctx   context.Context
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		b.done = true
		b.pc.release(b.stop, b.reuse)
	case err != nil:
		b.done = true
		b.stop()
		b.pc.nc.Close()
		if b.ctx.Err() != nil {
			err = fmt.Errorf("upstream response: %w", b.ctx.Err())
		}
	}
	return n, err
}

// Close gives the connection back if the body was read to its end, else
// closes it.
func (b *h1Body) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.pc.nc.Close()
	}
	return nil
}

// limitedReader reads from r at most n bytes (any, if n is negative) and
// counts what it read.
type limitedReader struct {
	r    io.Reader
	n    int64
	read int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n == 0 {
		return 0, errors.New("upstream response headers too large")
	}
	if l.n > 0 && int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	if l.n > 0 {
		l.n -= int64(n)
	}
	return n, err
}
