package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var (
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/client")
	serverID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/server")
	otherID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/other/sa/other")
	target   = netip.MustParseAddrPort("10.0.0.7:8080")
)

// failTimeout bounds waits that only time out when a test fails.
const failTimeout = 10 * time.Second

// testEnv is an HBONE server on a loopback port and a client for it.
type testEnv struct {
	ca      *hbonetest.CA
	svids   *hbonetest.Source
	addr    netip.AddrPort
	accepts atomic.Int64 // TCP connections accepted by the server
	logs    *logCapture
	client  *Client
	srv     *Server
	cancel  context.CancelFunc // stops Serve
	served  chan error         // Serve's result
}

// newTestEnv starts a server running h; mods adjust the configurations.
func newTestEnv(t testing.TB, h Handler, mods ...func(*ClientConfig, *ServerConfig)) *testEnv {
	t.Helper()
	e := &testEnv{ca: hbonetest.NewCA(t, "cluster.local"), logs: &logCapture{}, served: make(chan error, 1)}
	e.svids = hbonetest.NewSource(e.ca.SVID(t, clientID.String()), e.ca.SVID(t, serverID.String()), e.ca.SVID(t, otherID.String()))
	logger := slog.New(e.logs)
	ccfg := ClientConfig{SVIDs: e.svids, Bundles: e.ca.Bundle(), Logger: logger}
	scfg := ServerConfig{Identity: serverID, SVIDs: e.svids, Bundles: e.ca.Bundle(), Handler: h, Logger: logger}
	for _, m := range mods {
		m(&ccfg, &scfg)
	}
	srv, err := NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = netip.MustParseAddrPort(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.served <- srv.Serve(ctx, countingListener{ln, &e.accepts}) }()
	if e.client, err = NewClient(ccfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.client.Close()
		cancel()
		if err := <-e.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// request is a Request from clientID to serverID through the env's server.
func (e *testEnv) request() Request {
	return Request{Source: clientID, Destination: serverID, Server: e.addr, Target: target}
}

func (e *testEnv) dial(t testing.TB) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failTimeout)
	defer cancel()
	st, err := e.client.Dial(ctx, e.request())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return st
}

// tlsConfig is a client TLS configuration presenting src's SVID to the
// env's server.
func (e *testEnv) tlsConfig(src spiffeid.ID) *tls.Config {
	return clientTLS(e.svids, e.ca.Bundle(), src, serverID)
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// echo is a Handler that sends back what it receives, then half-closes.
var echo = HandlerFunc(func(ctx context.Context, req *Incoming) error {
	st, err := req.Accept()
	if err != nil {
		return err
	}
	if _, err := io.Copy(st, st); err != nil {
		return err
	}
	return st.CloseWrite()
})

// logCapture is a slog.Handler keeping records for assertions.
type logCapture struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCapture) WithGroup(string) slog.Handler            { return l }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, b.String())
	return nil
}

// waitFor waits until a record containing all of parts is logged.
func (l *logCapture) waitFor(t testing.TB, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(failTimeout)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, m := range l.msgs {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(m, p)
			}
			if ok {
				l.mu.Unlock()
				return m
			}
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond) // polling a log; correctness does not depend on it
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no log record with %q; have:\n%s", parts, strings.Join(l.msgs, "\n"))
	return ""
}

// rawH2 is a hand-driven HTTP/2 client, for sending what Client never would.
type rawH2 struct {
	t    testing.TB
	conn net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

// dialRaw opens a TLS connection with cfg and sends the client preface.
func dialRaw(t testing.TB, addr netip.AddrPort, cfg *tls.Config) *rawH2 {
	t.Helper()
	c, err := tls.Dial("tcp", addr.String(), cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(failTimeout))
	r := &rawH2{t: t, conn: c, fr: http2.NewFramer(c, c)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.henc = hpack.NewEncoder(&r.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

// headers sends a HEADERS frame with the given name, value pairs.
func (r *rawH2) headers(id uint32, end bool, kv ...string) {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		r.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// response reads frames until the response head of stream id and returns
// its :status and whether it ended the stream, or "RST_STREAM <code>".
func (r *rawH2) response(id uint32) (status string, end bool) {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("reading response to stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status"), f.StreamEnded()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM " + f.ErrCode.String(), true
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String(), true
		}
	}
}

// tcpUpstream listens on loopback and runs serve for each connection.
func tcpUpstream(t testing.TB, serve func(c *net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// relayTo is a Handler that relays every tunnel to upstream, like ztunnel's
// inbound side does.
func relayTo(upstream netip.AddrPort) Handler {
	return HandlerFunc(func(ctx context.Context, req *Incoming) error {
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", upstream.String())
		if err != nil {
			return ErrUnreachable
		}
		st, err := req.Accept()
		if err != nil {
			up.Close()
			return err
		}
		_, _, err = Relay(st, up)
		return err
	})
}
