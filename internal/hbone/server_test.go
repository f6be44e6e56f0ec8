package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

func TestServerAnswersMalformedConnect(t *testing.T) {
	e := newTestEnv(t, echo)
	raw := dialRaw(t, e.addr, e.tlsConfig(clientID))
	id := uint32(1)
	for _, tc := range []struct {
		name    string
		headers []string
		want    string
	}{
		{"GET", []string{":method", "GET", ":scheme", "https", ":authority", "10.0.0.7:8080", ":path", "/"}, "400"},
		{"hostname authority", []string{":method", "CONNECT", ":authority", "example.com:80"}, "400"},
		{"missing authority", []string{":method", "CONNECT"}, "400"},
		{"port zero", []string{":method", "CONNECT", ":authority", "10.0.0.7:0"}, "400"},
		{"extended CONNECT", []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/", ":authority", "10.0.0.7:80"}, "400"},
		{"malformed Forwarded", []string{":method", "CONNECT", ":authority", "10.0.0.7:80", "forwarded", `for="[::1`}, "400"},
		{"unknown pseudo-header", []string{":method", "CONNECT", ":authority", "10.0.0.7:80", ":evil", "1"}, "RST_STREAM PROTOCOL_ERROR"},
		{"upper-case header name", []string{":method", "CONNECT", ":authority", "10.0.0.7:80", "Baggage", "a=b"}, "RST_STREAM PROTOCOL_ERROR"},
		{"well-formed", []string{":method", "CONNECT", ":authority", "10.0.0.7:80"}, "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// All on one connection: bad requests must not end it.
			raw.headers(id, false, tc.headers...)
			status, end := raw.response(id)
			if status != tc.want {
				t.Fatalf("answer %q, want %q", status, tc.want)
			}
			if status == "400" && !end {
				t.Error("400 without END_STREAM")
			}
			id += 2
		})
	}
}

func TestServerRefusesUntrustedClients(t *testing.T) {
	e := newTestEnv(t, echo)
	otherCA := hbonetest.NewCA(t, "cluster.local")
	evilCA := hbonetest.NewCA(t, "evil.local")
	clientWith := func(sv *hbonetest.Source, src string, mod func(*tls.Config)) *tls.Config {
		cfg := clientTLS(sv, e.ca.Bundle(), spiffeid.RequireFromString(src), serverID)
		if mod != nil {
			mod(cfg)
		}
		return cfg
	}
	impostor := "spiffe://cluster.local/ns/default/sa/client"
	for _, tc := range []struct {
		name    string
		tls     *tls.Config // nil: send garbage instead of TLS
		wantLog string
	}{
		{"chain from another CA", clientWith(hbonetest.NewSource(otherCA.SVID(t, impostor)), impostor, nil), "could not verify leaf certificate"},
		{"wrong trust domain", clientWith(hbonetest.NewSource(evilCA.SVID(t, "spiffe://evil.local/ns/x/sa/y")), "spiffe://evil.local/ns/x/sa/y", nil), "evil.local"},
		{"no client certificate", clientWith(e.svids, clientID.String(), func(c *tls.Config) { c.GetClientCertificate = nil }), "client didn't provide a certificate"},
		{"HTTP/1.1 ALPN", clientWith(e.svids, clientID.String(), func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }), `negotiated ALPN ""`},
		{"unknown ALPN", clientWith(e.svids, clientID.String(), func(c *tls.Config) { c.NextProtos = []string{"spdy/3"} }), "unsupported application protocols"},
		{"no ALPN", clientWith(e.svids, clientID.String(), func(c *tls.Config) { c.NextProtos = nil }), `negotiated ALPN ""`},
		{"TLS 1.2", clientWith(e.svids, clientID.String(), func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 }), "unsupported versions"},
		{"plaintext garbage", nil, "does not look like a TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", e.addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(failTimeout))
			if tc.tls == nil {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			} else {
				tc := tls.Client(c, tc.tls)
				if err := tc.Handshake(); err == nil {
					// TLS 1.3 clients learn of a refused certificate
					// at their first read.
					io.WriteString(tc, http2.ClientPreface)
					c = tc
				}
			}
			io.ReadAll(c) // an error or EOF; the server's log says why
			c.Close()
			e.logs.waitFor(t, "hbone connection failed", tc.wantLog)
			// The server keeps serving others.
			e.dial(t).Close()
		})
	}
}

func TestServerSurvivesGarbageFrames(t *testing.T) {
	e := newTestEnv(t, echo)
	raw := dialRaw(t, e.addr, e.tlsConfig(clientID))
	// A DATA frame header announcing 16 MiB, far past our SETTINGS.
	raw.conn.Write([]byte{0xff, 0xff, 0xff, 0x0, 0x0, 0x0, 0x0, 0x0, 0x1, 'x'})
	if status, _ := raw.response(1); status != "GOAWAY FRAME_SIZE_ERROR" {
		t.Errorf("answer %q, want GOAWAY FRAME_SIZE_ERROR", status)
	}
	raw.conn.Close()
	e.logs.waitFor(t, "hbone connection failed", "FRAME_SIZE_ERROR")
	e.dial(t).Close()
}

func TestServeDrainsTunnelsOnCancel(t *testing.T) {
	e := newTestEnv(t, echo)
	st := e.dial(t)
	defer st.Close()
	e.cancel()
	// Wait for the GOAWAY: new tunnels need a new connection, which the
	// closed listener refuses.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), failTimeout)
		s2, err := e.client.Dial(ctx, e.request())
		cancel()
		if err != nil {
			break
		}
		s2.Close()
	}
	io.WriteString(st, "still open")
	st.CloseWrite()
	if b, err := io.ReadAll(st); err != nil || string(b) != "still open" {
		t.Fatalf("draining tunnel: %q, %v", b, err)
	}
	select {
	case err := <-e.served:
		e.served <- err // for the cleanup
	case <-time.After(failTimeout):
		t.Fatal("Serve did not return once the last tunnel ended")
	}
}

// After GoAway returns, a new tunnel never lands on a connection that was
// open before it: it is refused there and the client opens another, while
// the tunnels already open carry on.
func TestGoAwayHandsNewTunnelsToNewConnections(t *testing.T) {
	e := newTestEnv(t, echo)
	st := e.dial(t)
	defer st.Close()
	if n := e.accepts.Load(); n != 1 {
		t.Fatalf("%d connections accepted, want 1", n)
	}
	e.srv.GoAway()
	s2 := e.dial(t)
	defer s2.Close()
	if n := e.accepts.Load(); n != 2 {
		t.Fatalf("%d connections accepted after GoAway, want 2 (the new tunnel on a new connection)", n)
	}
	for _, c := range []*Stream{st, s2} {
		io.WriteString(c, "ping")
		c.CloseWrite()
		if b, err := io.ReadAll(c); err != nil || string(b) != "ping" {
			t.Fatalf("tunnel after GoAway: %q, %v", b, err)
		}
	}
}

func TestServeForceClosesAfterDrainTimeout(t *testing.T) {
	e := newTestEnv(t, echo, func(_ *ClientConfig, s *ServerConfig) { s.DrainTimeout = 50 * time.Millisecond })
	st := e.dial(t)
	defer st.Close()
	e.cancel()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrConnClosed) && !errors.Is(err, ErrStreamReset) {
		t.Fatalf("Read on a tunnel past the drain timeout: %v", err)
	}
}

func TestServerInteropsWithXNetTransport(t *testing.T) {
	e := newTestEnv(t, echo)
	tr := &http.Transport{TLSClientConfig: e.tlsConfig(clientID), Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	u := &url.URL{Scheme: "https", Host: e.addr.String()}

	pr, pw := io.Pipe()
	res, err := tr.RoundTrip(&http.Request{Method: http.MethodConnect, URL: u, Host: target.String(), Header: http.Header{}, Body: pr})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT answered %d", res.StatusCode)
	}
	io.WriteString(pw, "over x/net")
	pw.Close() // END_STREAM
	if b, err := io.ReadAll(res.Body); err != nil || string(b) != "over x/net" {
		t.Fatalf("echo: %q, %v", b, err)
	}

	res, err = tr.RoundTrip(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("GET answered %d, want 400", res.StatusCode)
	}
}

func TestClientInteropsWithXNetServer(t *testing.T) {
	e := newTestEnv(t, echo) // for its CA and SVIDs
	got := make(chan *http.Request, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: serverTLS(e.svids, e.ca.Bundle(), serverID), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP2(true)
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	req := e.request()
	req.Server = netip.MustParseAddrPort(ln.Addr().String())
	req.SourceIP = netip.MustParseAddr("10.9.8.7")
	req.Baggage = "a=b"
	st, err := e.client.Dial(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	io.WriteString(st, "to x/net")
	st.CloseWrite()
	if b, err := io.ReadAll(st); err != nil || string(b) != "to x/net" {
		t.Fatalf("echo: %q, %v", b, err)
	}
	r := <-got
	if r.Method != http.MethodConnect || r.Host != target.String() || r.Header.Get("Forwarded") != "for=10.9.8.7" || r.Header.Get("Baggage") != "a=b" {
		t.Errorf("x/net saw %s %s %v", r.Method, r.Host, r.Header)
	}
	if !strings.HasPrefix(r.Proto, "HTTP/2") {
		t.Errorf("proto %s", r.Proto)
	}
}
