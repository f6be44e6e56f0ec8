package hbone

import (
	"bytes"
	"context"
	"io"
	"net"
	"reflect"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// shortLinger makes sessions idle after d for the rest of the test.
func shortLinger(t *testing.T, d time.Duration) {
	old := sessionLinger
	sessionLinger = d
	t.Cleanup(func() { sessionLinger = old })
}

// idleReadLoops counts the goroutines waiting in waitReadable: sessions
// whose read loops have idled.
func idleReadLoops(t *testing.T) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), "hbone.waitReadable(")
}

func waitIdleReadLoops(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(failTimeout)
	for idleReadLoops(t) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle read loops, want %d", idleReadLoops(t), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exchange(t *testing.T, rw io.ReadWriter, msg string) {
	t.Helper()
	if _, err := io.WriteString(rw, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(rw, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, buf, err)
	}
}

func TestIdleSessionsWaitShallowAndResume(t *testing.T) {
	shortLinger(t, 100*time.Millisecond)
	up := tcpUpstream(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	e := newTestEnv(t, relayTo(up))
	st := e.dial(t)
	defer st.Close()
	// Bulk data: the echo comes back in 64 KiB frames, which the framer
	// reads into a buffer it keeps.
	exchange(t, st, strings.Repeat("x", 1<<20))
	if n := framerReadBuf(st.sess); n < 32<<10 {
		t.Fatalf("framer read buffer %d bytes after bulk data; the test expects it grown", n)
	}
	// Both ends' read loops idle: the client's session and the server's,
	// and the framer's buffer goes.
	waitIdleReadLoops(t, 2)
	if n := framerReadBuf(st.sess); n != 0 {
		t.Errorf("an idle session's framer keeps a %d-byte read buffer", n)
	}
	// Data on the open tunnel wakes both.
	exchange(t, st, "after idling")
	// So does a new tunnel on the same connection, after another idle.
	waitIdleReadLoops(t, 2)
	st2 := e.dial(t)
	defer st2.Close()
	exchange(t, st2, "second tunnel")
	exchange(t, st, "first tunnel again")
	if n := e.accepts.Load(); n != 1 {
		t.Errorf("%d connections accepted, want 1: idling must not end a connection", n)
	}
	// GOAWAY from the server wakes an idle client, which opens a new
	// connection for the next tunnel.
	waitIdleReadLoops(t, 2)
	e.srv.GoAway()
	st3 := e.dial(t)
	defer st3.Close()
	exchange(t, st3, "after GOAWAY")
	if n := e.accepts.Load(); n != 2 {
		t.Errorf("%d connections accepted after GOAWAY, want 2", n)
	}
	// The first connection carries its two tunnels on, and idles again,
	// as does the new one. The cleanup closes client and server with all
	// four read loops idle: it hangs if closing does not wake them.
	exchange(t, st, "first tunnel after GOAWAY")
	waitIdleReadLoops(t, 4)
}

// A deadline that passes inside a frame must not cost the framer the
// frame's first bytes: the peer here sends a PING's first four bytes, waits
// past the linger, then the rest.
func TestIdleDeadlineInsideAFrameIsDropped(t *testing.T) {
	shortLinger(t, 50*time.Millisecond)
	e := newTestEnv(t, HandlerFunc(func(context.Context, *Incoming) error { return nil }))
	r := dialRaw(t, e.addr, e.tlsConfig(clientID))
	var frame bytes.Buffer
	if err := http2.NewFramer(&frame, nil).WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	for _, part := range [][]byte{frame.Bytes()[:4], frame.Bytes()[4:]} {
		if _, err := r.conn.Write(part); err != nil { // a TLS record each
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no PING ack: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() || f.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
				t.Fatalf("PING %v %v, want the ack of ours", f.IsAck(), f.Data)
			}
			return
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q: the server lost part of the frame", f.ErrCode, f.DebugData())
		}
	}
}

// framerReadBuf is the capacity of the read buffer s's framer keeps
// (x/net's http2.Framer.readBuf, read by reflection).
func framerReadBuf(s *session) int {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return reflect.ValueOf(s.fr).Elem().FieldByName("readBuf").Cap()
}
