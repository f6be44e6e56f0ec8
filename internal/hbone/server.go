package hbone

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of ServerConfig.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDrainTimeout     = 5 * time.Second
)

// Handler decides the fate of CONNECT requests.
type Handler interface {
	// ServeHBONE is called on a goroutine of its own for every
	// well-formed CONNECT request (malformed ones are answered 400 without
	// it). To open the tunnel, call req.Accept and use the stream, which
	// is closed when ServeHBONE returns, or req.Hijack to keep using it
	// after returning (with a Bridge, say). To refuse, return an error
	// without calling Accept: errors wrapping ErrBadRequest, ErrDenied or
	// ErrUnreachable are answered 400, 401 or 503, any other 503. ctx ends
	// when the stream does, or its connection, or ServeHBONE returns (a
	// hijacked stream goes on without it).
	ServeHBONE(ctx context.Context, req *Incoming) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Incoming) error

// ServeHBONE calls f.
func (f HandlerFunc) ServeHBONE(ctx context.Context, req *Incoming) error { return f(ctx, req) }

// Incoming is a CONNECT request received by a Server.
type Incoming struct {
	// Peer is the client's verified SPIFFE identity.
	Peer spiffeid.ID
	// Target is the destination requested in :authority.
	Target netip.AddrPort
	// Source is the original client address from the Forwarded header;
	// zero when the header is absent or hides it.
	Source netip.Addr
	// Baggage and Traceparent are the W3C headers, empty when absent.
	Baggage, Traceparent string

	st       *Stream
	answered bool
	hijacked bool // the handler closes the stream, not the Server
}

// Accept answers 200 and returns the tunnel. It may be called once, and
// not after the Handler has returned.
func (in *Incoming) Accept() (*Stream, error) {
	if in.answered {
		return nil, errors.New("hbone: request already answered")
	}
	in.answered = true
	if err := in.st.respond(http.StatusOK); err != nil {
		return nil, fmt.Errorf("hbone: accept: %w", err)
	}
	return in.st, nil
}

// Hijack is Accept for a Handler that keeps the tunnel after it returns:
// the Server does not close the stream when ServeHBONE returns; the caller
// must. The stream still ends with its connection (Serve's drain
// included).
func (in *Incoming) Hijack() (*Stream, error) {
	st, err := in.Accept()
	if err == nil {
		in.hijacked = true
	}
	return st, err
}

// LocalAddr returns the local address of the connection carrying the request.
func (in *Incoming) LocalAddr() net.Addr { return in.st.LocalAddr() }

// RemoteAddr returns the address the connection carrying the request comes
// from: the client's ztunnel or waypoint, not the original client.
func (in *Incoming) RemoteAddr() net.Addr { return in.st.RemoteAddr() }

// ServerConfig configures a Server. Identity, SVIDs, Bundles and Handler
// are required.
type ServerConfig struct {
	// Identity is the identity the server proves; SVIDs must have it.
	Identity spiffeid.ID
	SVIDs    SVIDSource
	// Bundles supplies the trust bundles client chains are verified
	// against. Clients of trust domains without a bundle are refused.
	Bundles x509bundle.Source
	Handler Handler
	// MaxStreams bounds concurrent tunnels per connection (advertised in
	// SETTINGS; more are refused). Default DefaultMaxStreams.
	MaxStreams int
	// HandshakeTimeout bounds the TLS handshake. Default
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DrainTimeout is how long open tunnels may go on once Serve's context
	// is canceled. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// PingInterval and PingTimeout: as in ClientConfig.
	PingInterval, PingTimeout time.Duration
	// Logger receives connection and request events. Default: discard.
	Logger *slog.Logger
}

// Server accepts HBONE connections.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	tls *tls.Config

	mu       sync.Mutex
	sessions map[*session]struct{} // open connections, for GoAway
}

// NewServer checks cfg and returns a Server. It starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Identity.IsZero() || cfg.SVIDs == nil || cfg.Bundles == nil || cfg.Handler == nil {
		return nil, errors.New("hbone: ServerConfig needs Identity, SVIDs, Bundles and Handler")
	}
	cfg.MaxStreams = orDefault(cfg.MaxStreams, DefaultMaxStreams)
	cfg.HandshakeTimeout = orDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	cfg.DrainTimeout = orDefault(cfg.DrainTimeout, DefaultDrainTimeout)
	cfg.PingInterval = orDefault(cfg.PingInterval, DefaultPingInterval)
	cfg.PingTimeout = orDefault(cfg.PingTimeout, DefaultPingTimeout)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, tls: serverTLS(cfg.SVIDs, cfg.Bundles, cfg.Identity)}, nil
}

// Serve accepts connections on ln until ctx is canceled, then closes ln,
// lets open tunnels drain for DrainTimeout, and returns nil. A connection
// that fails (bad TLS, protocol errors) is logged and does not disturb the
// others. It returns an error only if ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hbone: accept: %w", err)
			}
			// EMFILE and the like: wait rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("hbone accept failed, retrying", "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, nc); err != nil {
				s.log.Info("hbone connection failed", "src", nc.RemoteAddr(), "err", err)
			}
		}()
	}
}

// ServeConn serves one accepted connection until it ends and closes it.
// Canceling ctx drains it as in Serve. It returns nil for an orderly end.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	raw := &batchConn{Conn: nc}
	tc := tls.Server(raw, s.tls)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		nc.Close()
		return fmt.Errorf("hbone: TLS handshake with %s: %w", nc.RemoteAddr(), err)
	}
	peer, err := peerIdentity(tc.ConnectionState())
	if err != nil {
		closeConn(tc)
		return fmt.Errorf("hbone: connection from %s: %w", nc.RemoteAddr(), err)
	}
	log := s.log.With("src", nc.RemoteAddr(), "identity", peer)
	return s.serveSession(ctx, tc, raw, peer, log)
}

// serveSession runs the HTTP/2 side of a connection; the TLS side is done.
func (s *Server) serveSession(ctx context.Context, nc net.Conn, raw *batchConn, peer spiffeid.ID, log *slog.Logger) error {
	var wg sync.WaitGroup
	opts := sessionOptions{
		maxStreams:   s.cfg.MaxStreams,
		pingInterval: max(s.cfg.PingInterval, 0),
		pingTimeout:  s.cfg.PingTimeout,
		onRequest: func(st *Stream, f *http2.MetaHeadersFrame) {
			in, err := parseRequest(f)
			in.Peer, in.st = peer, st
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveStream(in, err, log)
			}()
		},
	}
	// Tunnels outlive ctx by the drain time: the session gets its own.
	sess := newSession(context.WithoutCancel(ctx), nc, raw, false, peer, opts, log)
	s.track(sess)
	defer s.untrack(sess)
	// When ctx ends: GOAWAY now, and close the session if it is still
	// draining after DrainTimeout (closing a closed one does nothing). No
	// goroutine waits for ctx meanwhile.
	stop := context.AfterFunc(ctx, func() {
		sess.shutdown()
		time.AfterFunc(s.cfg.DrainTimeout, func() {
			sess.close(fmt.Errorf("%w: drain timeout", ErrConnClosed))
		})
	})
	log.Debug("hbone connection open")
	err := sess.run()
	stop()
	wg.Wait()
	if orderly(err) {
		log.Debug("hbone connection closed", "reason", err)
		return nil
	}
	return err
}

// GoAway tells every connection open now, before it returns, that it takes
// no new tunnels (GOAWAY; a request already on its way is refused with
// REFUSED_STREAM, which a Client retries on another connection). Open
// tunnels carry on; connections accepted later are not affected. Canceling
// Serve's context does this too, but from goroutines of its own: a restart
// that must hand every new tunnel to its successor closes its listener and
// calls GoAway.
func (s *Server) GoAway() {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.shutdown()
	}
}

// track records an open session.
func (s *Server) track(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == nil {
		s.sessions = make(map[*session]struct{})
	}
	s.sessions[sess] = struct{}{}
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
}

// serveStream answers one request: 400 if it is malformed, else whatever
// the Handler decides.
func (s *Server) serveStream(in *Incoming, bad error, log *slog.Logger) {
	defer func() {
		if !in.hijacked {
			in.st.Close()
		}
	}()
	if bad != nil {
		log.Info("hbone bad request", "err", bad)
		if err := in.st.respond(http.StatusBadRequest); err != nil {
			log.Debug("hbone answer not sent", "status", http.StatusBadRequest, "err", err)
		}
		return
	}
	err := s.cfg.Handler.ServeHBONE(in.st.ctx, in)
	in.st.releaseContext()
	if in.answered {
		if err != nil {
			log.Debug("hbone tunnel ended", "dst", in.Target, "err", err)
		}
		return
	}
	if err == nil {
		err = errors.New("handler returned without accepting or refusing")
	}
	code := statusFor(err)
	log.Debug("hbone request refused", "dst", in.Target, "status", code, "err", err)
	if err := in.st.respond(code); err != nil {
		log.Debug("hbone answer not sent", "dst", in.Target, "status", code, "err", err)
	}
}

// parseRequest reads a CONNECT request's headers. The error, if any,
// wraps ErrBadRequest and says what is wrong.
func parseRequest(f *http2.MetaHeadersFrame) (*Incoming, error) {
	in := &Incoming{}
	bad := func(format string, args ...any) (*Incoming, error) {
		return in, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	if f.Truncated {
		return bad("header list larger than %d bytes", maxHeaderList)
	}
	if m := f.PseudoValue("method"); m != http.MethodConnect {
		return bad("method %q, want CONNECT", m)
	}
	for _, p := range []string{"scheme", "path", "protocol"} {
		if f.PseudoValue(p) != "" {
			return bad("CONNECT with :%s is not HBONE", p)
		}
	}
	target, err := parseAuthority(f.PseudoValue("authority"))
	if err != nil {
		return bad("%v", err)
	}
	in.Target = target
	var baggage []string
	sawForwarded := false
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case headerForwarded:
			if sawForwarded {
				continue // the first element of the first header is the client
			}
			sawForwarded = true
			src, err := parseForwarded(hf.Value)
			if err != nil && !errors.Is(err, errNoForwardedFor) {
				return bad("%v", err)
			}
			in.Source = src
		case headerBaggage:
			baggage = append(baggage, hf.Value)
		case headerTraceparent:
			if in.Traceparent == "" {
				in.Traceparent = hf.Value
			}
		}
	}
	in.Baggage = strings.Join(baggage, ",")
	return in, nil
}

// respond sends the response head; any status but 200 ends the stream,
// and resets it if the client is still sending (RFC 9113 8.1).
func (st *Stream) respond(code int) error {
	s := st.sess
	end := code != http.StatusOK
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	s.mu.Lock()
	gone, cause := st.removed, st.recvErr
	s.mu.Unlock()
	if gone { // reset by the client, or the connection died
		return fmt.Errorf("hbone: stream over before the answer: %w", cmp.Or(cause, net.ErrClosed))
	}
	s.wmu.Lock()
	err := s.writeHeadersLocked(st.id, end, []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(code)}})
	s.wmu.Unlock()
	if !end || err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.sentEnd = true
	if !st.recvEnd && !st.removed {
		s.resetLocked(st, http2.ErrCodeNo, fmt.Errorf("%w: refused with %d", ErrConnClosed, code))
	} else {
		s.maybeRemoveLocked(st)
	}
	return nil
}
