package hbone

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
)

func TestPoolReusesConnectionPerKey(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mod       func(*Request)
		wantConns int64
	}{
		{"same key", func(*Request) {}, 1},
		{"other target", func(r *Request) { r.Target = netip.MustParseAddrPort("10.0.0.8:9090") }, 1},
		{"other source identity", func(r *Request) { r.Source = otherID }, 2},
		{"other source IP", func(r *Request) { r.SourceIP = netip.MustParseAddr("10.1.1.1") }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, echo)
			e.dial(t).Close()
			req := e.request()
			tc.mod(&req)
			st, err := e.client.Dial(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			if n := e.accepts.Load(); n != tc.wantConns {
				t.Errorf("%d connections, want %d", n, tc.wantConns)
			}
		})
	}
}

func TestPoolOpensAnotherConnectionPast100Streams(t *testing.T) {
	e := newTestEnv(t, echo)
	const n = DefaultMaxStreams + DefaultMaxStreams/2
	streams := make([]*Stream, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := e.client.Dial(context.Background(), e.request())
			streams[i] = st
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.accepts.Load(); got != 2 {
		t.Fatalf("%d streams opened at once used %d connections, want 2", n, got)
	}
	perConn := map[*session]int{}
	for _, st := range streams {
		perConn[st.sess]++
	}
	for _, k := range perConn {
		if k > DefaultMaxStreams {
			t.Errorf("a connection carries %d streams, limit %d", k, DefaultMaxStreams)
		}
	}
	// With a slot free again, the next tunnel needs no new connection.
	streams[0].Close()
	st := e.dial(t)
	st.Close()
	if got := e.accepts.Load(); got != 2 {
		t.Errorf("%d connections after a slot freed up, want 2", got)
	}
	for _, st := range streams {
		st.Close()
	}
}

// pipeEnv is a client and server joined by net.Pipe, for tests inside a
// synctest bubble, where the clock is fake.
type pipeEnv struct {
	client *Client
	dials  atomic.Int64
	ended  chan error // ServeConn results
	wg     sync.WaitGroup
	// wrap, if set, wraps the server's end of each connection.
	wrap func(net.Conn) net.Conn
}

func newPipeEnv(t *testing.T, h Handler) *pipeEnv {
	ca := hbonetest.NewCA(t, "cluster.local") // inside the bubble: valid at fake now
	svids := hbonetest.NewSource(ca.SVID(t, clientID.String()), ca.SVID(t, serverID.String()))
	discard := slog.New(slog.DiscardHandler)
	// The server PINGs on a period that never lands on the same fake instant
	// as the client's idle timeout (5 min, 30 default ping periods): a PING
	// written as the client closes would fail on net.Pipe, which cannot
	// half-close and drain as TCP does, and make an orderly end look broken.
	srv, err := NewServer(ServerConfig{Identity: serverID, SVIDs: svids, Bundles: ca.Bundle(), Handler: h, Logger: discard,
		PingInterval: 7 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &pipeEnv{ended: make(chan error, 10)}
	e.client, err = NewClient(ClientConfig{
		SVIDs: svids, Bundles: ca.Bundle(), Logger: discard,
		DialTCP: func(context.Context, netip.Addr, netip.AddrPort) (net.Conn, error) {
			e.dials.Add(1)
			c, s := net.Pipe()
			if e.wrap != nil {
				s = e.wrap(s)
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.ended <- srv.ServeConn(ctx, s)
			}()
			return c, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.client.Close()
		cancel()
		e.wg.Wait()
	})
	return e
}

func (e *pipeEnv) roundTrip(t *testing.T) {
	t.Helper()
	st, err := e.client.Dial(context.Background(), Request{Source: clientID, Destination: serverID, Server: netip.MustParseAddrPort("10.0.0.1:15008"), Target: target})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer st.Close()
	io.WriteString(st, "ping")
	st.CloseWrite()
	if b, err := io.ReadAll(st); err != nil || string(b) != "ping" {
		t.Fatalf("round trip: %q, %v", b, err)
	}
}

func TestPoolClosesIdleConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, echo)
		e.roundTrip(t)
		time.Sleep(DefaultIdleTimeout - time.Second)
		synctest.Wait()
		e.roundTrip(t)
		if n := e.dials.Load(); n != 1 {
			t.Fatalf("%d connections before the idle timeout, want 1 reused", n)
		}

		time.Sleep(DefaultIdleTimeout + time.Second)
		synctest.Wait()
		select {
		case err := <-e.ended:
			if err != nil {
				t.Errorf("server saw the idle close as %v, want an orderly end", err)
			}
		default:
			t.Fatal("connection still open after the idle timeout")
		}
		e.roundTrip(t)
		if n := e.dials.Load(); n != 2 {
			t.Fatalf("%d connections after the idle timeout, want a new one", n)
		}
	})
}

// stallConn is a connection whose reads and writes hang once stalled, as
// with a peer that vanished without a FIN, until released.
type stallConn struct {
	net.Conn
	stalled, released chan struct{}
}

func (c *stallConn) Read(p []byte) (int, error) {
	select {
	case <-c.stalled:
		<-c.released
		return 0, io.EOF
	default:
		return c.Conn.Read(p)
	}
}

func (c *stallConn) Write(p []byte) (int, error) {
	select {
	case <-c.stalled:
		<-c.released
		return 0, net.ErrClosed
	default:
		return c.Conn.Write(p)
	}
}

func TestKeepaliveClosesConnectionToSilentPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &stallConn{stalled: make(chan struct{}), released: make(chan struct{})}
		e := newPipeEnv(t, echo)
		e.wrap = func(c net.Conn) net.Conn { sc.Conn = c; return sc }
		e.roundTrip(t) // connection up, PINGs answered

		st, err := e.client.Dial(context.Background(), Request{Source: clientID, Destination: serverID, Server: netip.MustParseAddrPort("10.0.0.1:15008"), Target: target})
		if err != nil {
			t.Fatal(err)
		}
		close(sc.stalled)
		start := time.Now()
		_, err = st.Read(make([]byte, 1))
		if !errors.Is(err, ErrConnClosed) {
			t.Fatalf("Read on a stalled connection: %v; want ErrConnClosed", err)
		}
		if took, limit := time.Since(start), DefaultPingInterval+DefaultPingTimeout; took > limit {
			t.Errorf("dead peer detected after %v, want within %v", took, limit)
		}
		st.Close()
		close(sc.released)
	})
}

func TestKeepaliveKeepsAnsweringPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, echo)
		st, err := e.client.Dial(context.Background(), Request{Source: clientID, Destination: serverID, Server: netip.MustParseAddrPort("10.0.0.1:15008"), Target: target})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		time.Sleep(10 * (DefaultPingInterval + DefaultPingTimeout)) // quiet, but PINGs are answered
		io.WriteString(st, "still there")
		b := make([]byte, len("still there"))
		if _, err := io.ReadFull(st, b); err != nil {
			t.Fatalf("quiet stream broke: %v", err)
		}
	})
}

func TestPoolHonoursServerStreamLimit(t *testing.T) {
	// The server allows 10 streams per connection, the client 100: the
	// client must follow the server's SETTINGS, retrying streams the
	// server refused before the client had read them.
	e := newTestEnv(t, echo, func(_ *ClientConfig, s *ServerConfig) { s.MaxStreams = 10 })
	const n = 15
	streams := make(chan *Stream, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			st, err := e.client.Dial(context.Background(), e.request())
			streams <- st
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Dial: %v", err)
		}
		if st := <-streams; st != nil {
			defer st.Close()
		}
	}
	if got := e.accepts.Load(); got != 2 {
		t.Errorf("%d connections for %d streams at 10 per connection, want 2", got, n)
	}
}
