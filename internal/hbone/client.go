package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Defaults of ClientConfig and ServerConfig.
const (
	DefaultMaxStreams     = 100
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultPingInterval   = 10 * time.Second
	DefaultPingTimeout    = 20 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// ClientConfig configures a Client. SVIDs and Bundles are required.
type ClientConfig struct {
	// SVIDs supplies the certificate of Request.Source.
	SVIDs SVIDSource
	// Bundles supplies the trust bundles servers are verified against.
	Bundles x509bundle.Source
	// DialTCP opens the TCP connection to an HBONE server on behalf of
	// source IP src (ztunnel dials from inside the source pod's network
	// namespace). The default ignores src and dials from this host.
	DialTCP func(ctx context.Context, src netip.Addr, dst netip.AddrPort) (net.Conn, error)
	// MaxStreams bounds the tunnels open at once on one connection; past
	// it, another connection is opened. Default DefaultMaxStreams.
	MaxStreams int
	// IdleTimeout closes a connection that has carried no tunnel for this
	// long. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// PingInterval sends an HTTP/2 PING when nothing has been received for
	// this long, and PingTimeout closes the connection if the answer is
	// late. Defaults DefaultPingInterval, DefaultPingTimeout; a negative
	// interval disables keep-alive.
	PingInterval, PingTimeout time.Duration
	// ConnectTimeout bounds opening a connection (TCP and TLS). Default
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Logger receives connection-level events. Default: discard.
	Logger *slog.Logger
}

// Request describes a tunnel to open.
type Request struct {
	// Source is the identity to present; SVIDs must have its certificate.
	Source spiffeid.ID
	// Destination is the identity the server must prove.
	Destination spiffeid.ID
	// SourceIP is the original client address, sent in the Forwarded
	// header and handed to DialTCP. Zero omits it.
	SourceIP netip.Addr
	// Server is the HBONE endpoint to connect to: the destination's IP and
	// port 15008, or a waypoint's.
	Server netip.AddrPort
	// Target is the destination address, sent as :authority.
	Target netip.AddrPort
	// Baggage and Traceparent are sent as the W3C headers of the same
	// names when not empty.
	Baggage, Traceparent string
}

// poolKey identifies the connections a request may share (the key Istio's
// ztunnel pools by).
type poolKey struct {
	src, dst spiffeid.ID
	srcIP    netip.Addr
	server   netip.AddrPort
}

// poolConn is a pooled connection, or one being opened (sess nil).
type poolConn struct {
	sess    *session
	ready   chan struct{} // closed when the dial ends; then sess or err is set
	err     error
	waiters int // Dial calls waiting for ready
}

// Client opens HBONE tunnels over a pool of HTTP/2 connections. It is safe
// for concurrent use. Close it to release its connections.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	pool   map[poolKey][]*poolConn
}

// NewClient checks cfg and returns a Client. It starts nothing.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.SVIDs == nil || cfg.Bundles == nil {
		return nil, errors.New("hbone: ClientConfig needs SVIDs and Bundles")
	}
	if cfg.DialTCP == nil {
		var d net.Dialer
		cfg.DialTCP = func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	cfg.MaxStreams = orDefault(cfg.MaxStreams, DefaultMaxStreams)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.PingInterval = orDefault(cfg.PingInterval, DefaultPingInterval)
	cfg.PingTimeout = orDefault(cfg.PingTimeout, DefaultPingTimeout)
	cfg.ConnectTimeout = orDefault(cfg.ConnectTimeout, DefaultConnectTimeout)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{cfg: cfg, log: log, ctx: ctx, cancel: cancel, pool: make(map[poolKey][]*poolConn)}, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Dial opens a tunnel to req.Target through the HBONE server req.Server,
// reusing a pooled connection when one with the same source and
// destination identities, source IP and server has room. It fails with
// ErrIdentityMismatch if the server is not req.Destination, and with a
// *StatusError if the server refuses.
func (c *Client) Dial(ctx context.Context, req Request) (*Stream, error) {
	fields, err := requestFields(req)
	if err != nil {
		return nil, err
	}
	key := poolKey{src: req.Source, dst: req.Destination, srcIP: req.SourceIP, server: req.Server}
	for attempt := 0; ; attempt++ {
		sess, err := c.acquire(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("hbone: dial %s via %s: %w", req.Target, req.Server, err)
		}
		st, err := c.open(ctx, sess, fields)
		if errors.Is(err, errRefused) && attempt < 2 {
			continue // the server did not see it; another connection may take it
		}
		if err != nil {
			return nil, fmt.Errorf("hbone: dial %s via %s: %w", req.Target, req.Server, err)
		}
		return st, nil
	}
}

// requestFields validates req and builds the CONNECT request's header block.
func requestFields(req Request) ([]hpack.HeaderField, error) {
	switch {
	case req.Source.IsZero() || req.Destination.IsZero():
		return nil, errors.New("hbone: request needs Source and Destination identities")
	case !req.Server.IsValid() || !req.Target.IsValid():
		return nil, errors.New("hbone: request needs Server and Target addresses")
	}
	fields := []hpack.HeaderField{
		{Name: ":method", Value: http.MethodConnect},
		{Name: ":authority", Value: req.Target.String()},
	}
	if req.SourceIP.IsValid() {
		fields = append(fields, hpack.HeaderField{Name: headerForwarded, Value: formatForwarded(req.SourceIP)})
	}
	for _, h := range []hpack.HeaderField{{Name: headerBaggage, Value: req.Baggage}, {Name: headerTraceparent, Value: req.Traceparent}} {
		if h.Value == "" {
			continue
		}
		if !httpguts.ValidHeaderFieldValue(h.Value) {
			return nil, fmt.Errorf("hbone: invalid %s header value", h.Name)
		}
		fields = append(fields, h)
	}
	return fields, nil
}

// open sends the CONNECT request on a reserved session and waits for the
// answer.
func (c *Client) open(ctx context.Context, sess *session, fields []hpack.HeaderField) (*Stream, error) {
	st, resp, err := sess.openStream(fields)
	if err != nil {
		return nil, err
	}
	select {
	case <-resp:
	case <-ctx.Done():
		st.Close()
		return nil, ctx.Err()
	}
	sess.mu.Lock()
	status, err := int(st.status), st.recvErr
	sess.mu.Unlock()
	switch {
	case status == http.StatusOK:
		return st, nil
	case status != 0:
		st.Close()
		return nil, &StatusError{Code: status}
	}
	st.Close()
	if err == nil {
		err = fmt.Errorf("%w: stream ended without a response", errProtocol)
	}
	return nil, err
}

// openStream sends HEADERS for a new stream on a session the caller has
// reserved a slot on.
func (s *session) openStream(fields []hpack.HeaderField) (*Stream, chan struct{}, error) {
	// Stream ids must reach the wire in order: allocate under wmu.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	s.reserved--
	if s.goingAway {
		err := s.err
		if !s.closed || orderly(err) {
			err = fmt.Errorf("%w: connection going away", errRefused)
		}
		s.maybeFinishLocked()
		s.mu.Unlock()
		return nil, nil, err
	}
	id := s.nextID
	s.nextID += 2
	if s.nextID > 1<<31-1 {
		s.goingAway = true // ids exhausted: the pool opens a new connection
	}
	st := s.newStreamLocked(id)
	resp := st.resp // closed (and dropped) by the read loop
	s.mu.Unlock()
	if err := s.writeHeadersLocked(id, false, fields); err != nil {
		return nil, nil, err
	}
	return st, resp, nil
}

// tryReserve takes a stream slot on s if it has one under limit.
func (s *session) tryReserve(limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.goingAway || len(s.streams)+s.reserved >= min(limit, int(min(s.peerMaxStreams, 1<<30))) {
		return false
	}
	s.reserved++
	return true
}

// acquire returns a session for key with a stream slot reserved, dialing a
// new connection when none has room. Callers arriving while a connection
// is being opened wait for it rather than opening their own.
func (c *Client) acquire(ctx context.Context, key poolKey) (*session, error) {
	// A few rounds suffice when a burst spills over to a new connection;
	// more mean the server takes no streams (SETTINGS of 0, say).
	for range 5 {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		var pc *poolConn
		for _, p := range c.pool[key] {
			if p.sess != nil {
				if p.sess.tryReserve(c.cfg.MaxStreams) {
					c.mu.Unlock()
					return p.sess, nil
				}
			} else if p.waiters < c.cfg.MaxStreams {
				pc = p
				break
			}
		}
		if pc == nil {
			pc = &poolConn{ready: make(chan struct{})}
			c.pool[key] = append(c.pool[key], pc)
			c.wg.Add(1)
			go c.connect(key, pc)
		}
		pc.waiters++
		c.mu.Unlock()

		select {
		case <-pc.ready:
		case <-ctx.Done():
			c.mu.Lock()
			pc.waiters--
			c.mu.Unlock()
			return nil, ctx.Err()
		}
		c.mu.Lock()
		pc.waiters--
		c.mu.Unlock()
		if pc.err != nil {
			return nil, pc.err
		}
		if pc.sess.tryReserve(c.cfg.MaxStreams) {
			return pc.sess, nil
		}
		// Full already, or gone: look again.
	}
	return nil, fmt.Errorf("%w: no connection to the server has room for a stream", ErrUnreachable)
}

// connect opens a connection for the pool and serves it until it ends. It
// runs on its own goroutine: a Dial that gives up does not abort a
// connection others wait for.
func (c *Client) connect(key poolKey, pc *poolConn) {
	defer c.wg.Done()
	sess, err := c.handshake(key)
	if err != nil {
		c.mu.Lock()
		c.removeLocked(key, pc)
		pc.err = err
		c.mu.Unlock()
		close(pc.ready)
		return
	}
	c.mu.Lock()
	pc.sess = sess
	closed := c.closed
	c.mu.Unlock()
	if closed {
		sess.goAway(fmt.Errorf("%w: %w", ErrConnClosed, ErrClientClosed))
	}
	close(pc.ready)

	log := c.log.With("src", key.srcIP, "dst", key.server, "identity", key.dst)
	log.Debug("hbone connection open")
	err = sess.run()
	c.mu.Lock()
	c.removeLocked(key, pc)
	c.mu.Unlock()
	if orderly(err) || errors.Is(err, ErrClientClosed) {
		log.Debug("hbone connection closed", "reason", err)
	} else {
		log.Info("hbone connection failed", "err", err)
	}
}

// handshake dials the server and completes TLS.
func (c *Client) handshake(key poolKey) (*session, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, err := c.cfg.DialTCP(ctx, key.srcIP, key.server)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	raw := &batchConn{Conn: nc}
	tc := tls.Client(raw, clientTLS(c.cfg.SVIDs, c.cfg.Bundles, key.src, key.dst))
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	if _, err := peerIdentity(tc.ConnectionState()); err != nil {
		closeConn(tc)
		return nil, err
	}
	opts := sessionOptions{
		maxStreams:   c.cfg.MaxStreams,
		idleTimeout:  c.cfg.IdleTimeout,
		pingInterval: max(c.cfg.PingInterval, 0),
		pingTimeout:  c.cfg.PingTimeout,
	}
	return newSession(c.ctx, tc, raw, true, key.dst, opts, c.log), nil
}

func (c *Client) removeLocked(key poolKey, pc *poolConn) {
	conns := slices.DeleteFunc(c.pool[key], func(p *poolConn) bool { return p == pc })
	if len(conns) == 0 {
		delete(c.pool, key)
	} else {
		c.pool[key] = conns
	}
}

// Close closes every connection, failing their open streams, and waits
// for their goroutines. Dial fails with ErrClientClosed afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var sessions []*session
	for _, conns := range c.pool {
		for _, pc := range conns {
			if pc.sess != nil {
				sessions = append(sessions, pc.sess)
			}
		}
	}
	c.mu.Unlock()
	c.cancel() // aborts dials in progress
	for _, s := range sessions {
		s.goAway(fmt.Errorf("%w: %w", ErrConnClosed, ErrClientClosed))
	}
	c.wg.Wait()
	return nil
}
