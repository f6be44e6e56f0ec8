package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRoundTrip(t *testing.T) {
	peers := make(chan spiffeid.ID, 1)
	e := newTestEnv(t, HandlerFunc(func(ctx context.Context, req *Incoming) error {
		peers <- req.Peer
		return echo(ctx, req)
	}))
	st := e.dial(t)
	defer st.Close()
	if _, err := io.WriteString(st, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello", got, err)
	}
	if st.Peer() != serverID {
		t.Errorf("client sees peer %s, want %s", st.Peer(), serverID)
	}
	if p := <-peers; p != clientID {
		t.Errorf("server sees peer %s, want %s", p, clientID)
	}
}

func TestLargeTransferBothWaysAtOnce(t *testing.T) {
	// More than a stream window each way, so WINDOW_UPDATEs must flow
	// while both directions are busy.
	const size = 3*streamWindow/2 + 12345
	e := newTestEnv(t, echo)
	st := e.dial(t)
	defer st.Close()
	want := make([]byte, size)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(want)
		if err == nil {
			err = st.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(want))
	}
}

func TestClientCloseWriteReachesUpstreamAsEOF(t *testing.T) {
	// The upstream answers only once it has read EOF.
	up := tcpUpstream(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	})
	e := newTestEnv(t, relayTo(up))
	st := e.dial(t)
	defer st.Close()
	io.WriteString(st, "twelve bytes")
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "read 12 bytes" {
		t.Fatalf("read %q, %v; want the upstream's answer after EOF", got, err)
	}
}

func TestUpstreamCloseWriteReachesClientAsEOF(t *testing.T) {
	// The upstream half-closes first and keeps reading.
	received := make(chan string, 1)
	up := tcpUpstream(t, func(c *net.TCPConn) {
		io.WriteString(c, "banner")
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		received <- string(b)
	})
	e := newTestEnv(t, relayTo(up))
	st := e.dial(t)
	defer st.Close()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "banner" {
		t.Fatalf("read %q, %v; want banner then EOF", got, err)
	}
	if _, err := io.WriteString(st, "sent after EOF"); err != nil {
		t.Fatalf("write after the server half-closed: %v", err)
	}
	st.CloseWrite()
	select {
	case r := <-received:
		if r != "sent after EOF" {
			t.Fatalf("upstream received %q", r)
		}
	case <-time.After(failTimeout):
		t.Fatal("upstream never got EOF")
	}
}

func TestDialReportsRefusalStatus(t *testing.T) {
	for _, tc := range []struct {
		name     string
		handler  error
		code     int
		sentinel error
	}{
		{"bad request", fmt.Errorf("port not served: %w", ErrBadRequest), http.StatusBadRequest, ErrBadRequest},
		{"denied", fmt.Errorf("policy ns/deny-all: %w", ErrDenied), http.StatusUnauthorized, ErrDenied},
		{"unreachable", fmt.Errorf("dial 10.0.0.7:8080: %w", ErrUnreachable), http.StatusServiceUnavailable, ErrUnreachable},
		{"other error", errors.New("boom"), http.StatusServiceUnavailable, ErrUnreachable},
		{"no decision", nil, http.StatusServiceUnavailable, ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, HandlerFunc(func(context.Context, *Incoming) error { return tc.handler }))
			_, err := e.client.Dial(context.Background(), e.request())
			var se *StatusError
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Fatalf("Dial error %v; want status %d", err, tc.code)
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.sentinel)
			}
			// The refusal ends the stream, not the connection.
			if _, err := e.client.Dial(context.Background(), e.request()); !errors.As(err, &se) {
				t.Errorf("second Dial: %v", err)
			}
			if n := e.accepts.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

func TestClientRejectsWrongServerIdentity(t *testing.T) {
	called := make(chan struct{}, 1)
	e := newTestEnv(t, HandlerFunc(func(ctx context.Context, req *Incoming) error {
		called <- struct{}{}
		return echo(ctx, req)
	}))
	req := e.request()
	req.Destination = otherID // the server is serverID
	_, err := e.client.Dial(context.Background(), req)
	if !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("Dial error %v; want ErrIdentityMismatch", err)
	}
	select {
	case <-called:
		t.Fatal("handler ran for a server the client should not trust")
	default:
	}
}

func TestDialFailsWithoutSourceCertificate(t *testing.T) {
	e := newTestEnv(t, echo)
	req := e.request()
	req.Source = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/unknown")
	if _, err := e.client.Dial(context.Background(), req); err == nil {
		t.Fatal("Dial succeeded without a certificate for the source identity")
	}
}

func TestNewConnectionsUseRotatedCertificate(t *testing.T) {
	e := newTestEnv(t, echo)
	src := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/late")
	req := e.request()
	req.Source = src
	if _, err := e.client.Dial(context.Background(), req); err == nil {
		t.Fatal("Dial succeeded before the source had a certificate")
	}
	e.svids.Set(e.ca.SVID(t, src.String())) // issued later, as a rotation would
	st, err := e.client.Dial(context.Background(), req)
	if err != nil {
		t.Fatalf("Dial after the certificate arrived: %v", err)
	}
	st.Close()
}

func TestHeadersCarried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     func(*Request)
		wantSrc netip.Addr
	}{
		{"ipv4 source", func(r *Request) { r.SourceIP = netip.MustParseAddr("10.1.2.3") }, netip.MustParseAddr("10.1.2.3")},
		{"ipv6 source", func(r *Request) { r.SourceIP = netip.MustParseAddr("fd00::1:2") }, netip.MustParseAddr("fd00::1:2")},
		{"no source", func(*Request) {}, netip.Addr{}},
		{"ipv6 target", func(r *Request) { r.Target = netip.MustParseAddrPort("[fd00::9]:443") }, netip.Addr{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan Incoming, 1)
			e := newTestEnv(t, HandlerFunc(func(ctx context.Context, req *Incoming) error {
				got <- *req
				return echo(ctx, req)
			}))
			req := e.request()
			req.Baggage = "k8s.namespace.name=default,k8s.pod.name=client-0"
			req.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			tc.req(&req)
			st, err := e.client.Dial(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			in := <-got
			if in.Target != req.Target || in.Source != tc.wantSrc || in.Baggage != req.Baggage || in.Traceparent != req.Traceparent {
				t.Errorf("server got target %v source %v baggage %q traceparent %q; want %v %v %q %q",
					in.Target, in.Source, in.Baggage, in.Traceparent, req.Target, tc.wantSrc, req.Baggage, req.Traceparent)
			}
		})
	}
}

func TestDialRejectsInvalidRequest(t *testing.T) {
	e := newTestEnv(t, echo)
	for _, tc := range []struct {
		name string
		mod  func(*Request)
	}{
		{"no source", func(r *Request) { r.Source = spiffeid.ID{} }},
		{"no destination", func(r *Request) { r.Destination = spiffeid.ID{} }},
		{"no target", func(r *Request) { r.Target = netip.AddrPort{} }},
		{"newline in baggage", func(r *Request) { r.Baggage = "a=b\r\nx-injected: 1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request()
			tc.mod(&req)
			if _, err := e.client.Dial(context.Background(), req); err == nil {
				t.Fatal("Dial accepted an invalid request")
			}
		})
	}
	if n := e.accepts.Load(); n != 0 {
		t.Errorf("invalid requests opened %d connections", n)
	}
}

func TestStreamReadDeadline(t *testing.T) {
	e := newTestEnv(t, echo)
	st := e.dial(t)
	defer st.Close()
	// As http.Server does to abort a background read.
	st.SetReadDeadline(time.Unix(1, 0))
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	st.SetReadDeadline(time.Time{})
	io.WriteString(st, "x")
	b := make([]byte, 1)
	if _, err := io.ReadFull(st, b); err != nil || b[0] != 'x' {
		t.Fatalf("Read after clearing the deadline: %q, %v", b, err)
	}
}

func TestStreamCloseUnblocksRead(t *testing.T) {
	e := newTestEnv(t, echo)
	st := e.dial(t)
	errc := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		errc <- err
	}()
	st.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked Read returned %v after Close; want net.ErrClosed", err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
}

func TestClientCloseFailsLaterDials(t *testing.T) {
	e := newTestEnv(t, echo)
	st := e.dial(t)
	e.client.Close()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrConnClosed) {
		t.Errorf("Read on a stream of a closed client: %v; want ErrConnClosed", err)
	}
	if _, err := e.client.Dial(context.Background(), e.request()); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Dial after Close: %v; want ErrClientClosed", err)
	}
	// The client said goodbye: the server sees an orderly end.
	e.logs.waitFor(t, "hbone connection closed", "going away")
}
