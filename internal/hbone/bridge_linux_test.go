package hbone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parked reports whether direction i of br is in the parker.
func parked(br *Bridge, i int) bool {
	br.mu.Lock()
	h := br.socks[i]
	br.mu.Unlock()
	if h == nil {
		return false
	}
	p := &idleParker
	p.mu.Lock()
	defer p.mu.Unlock()
	return h.park.id != 0 && p.parked[h.park.id] == &h.park
}

// waitIdle waits until the socket directions dirs of br are parked and br
// has no goroutine left.
func waitIdle(t *testing.T, br *Bridge, dirs ...int) {
	t.Helper()
	until(t, "the bridge goes idle", func() bool {
		for _, i := range dirs {
			if !parked(br, i) {
				return false
			}
		}
		return bridgeGoroutines() == 0
	})
}

// until polls cond (the parker runs on real time and epoll, which a
// synctest bubble cannot drive) for failTimeout at most.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s (%d bridge goroutines, %d sockets parked)", what, bridgeGoroutines(), ParkedSockets())
		}
		time.Sleep(time.Millisecond)
	}
}

func expectRead(t *testing.T, c io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func expectEOF(t *testing.T, c io.Reader) {
	t.Helper()
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v; want EOF", b, err)
	}
}

func TestBridgeParksIdleSocketsAndResumesBothWays(t *testing.T) {
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	br, done := startBridge(t, in, out)
	waitIdle(t, br, 0, 1)

	for range 2 { // parked, woken by data, parked again
		io.WriteString(client, "hello")
		expectRead(t, upstream, "hello")
		io.WriteString(upstream, "world!")
		expectRead(t, client, "world!")
		waitIdle(t, br, 0, 1)
	}

	// Half-close reaches the other side from a parked direction, and the
	// other direction carries on.
	endHalfClosed(t, br, done, client, upstream, func() {})
	if parked(br, 0) || parked(br, 1) {
		t.Error("an ended bridge is still parked")
	}
}

func TestBridgeCloseWhileParked(t *testing.T) {
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	before := ParkedSockets()
	br, done := startBridge(t, in, out)
	waitIdle(t, br, 0, 1)
	if n := ParkedSockets(); n != before+2 {
		t.Fatalf("%d sockets parked, want %d", n, before+2)
	}

	br.Close()
	r := waitResult(t, done)
	if !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("bridge closed while parked reported %v, want net.ErrClosed", r.err)
	}
	expectEOF(t, client)
	expectEOF(t, upstream)
	if n := ParkedSockets(); n != before {
		t.Errorf("%d sockets parked after the close, want %d", n, before)
	}
	until(t, "the bridge's goroutines end", func() bool { return bridgeGoroutines() == 0 })
}

func TestBridgeCloseBeforeStart(t *testing.T) {
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	br := NewBridge(in, out)
	br.Close()
	done := make(chan relayResult, 1)
	br.Start(func(ab, ba int64, err error) { done <- relayResult{ab, ba, err} })
	if r := waitResult(t, done); !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("bridge closed before Start reported %v, want net.ErrClosed", r.err)
	}
	expectEOF(t, client)
	expectEOF(t, upstream)
}

// resetEndsBridge resets the client's connection: the bridge must end with
// ECONNRESET and close upstream.
func resetEndsBridge(t *testing.T, client, upstream *net.TCPConn, done <-chan relayResult) {
	t.Helper()
	client.SetLinger(0)
	client.Close() // RST
	r := waitResult(t, done)
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Errorf("bridge reported %v, want ECONNRESET", r.err)
	}
	expectEOF(t, upstream)
}

func TestBridgeResetWhileParkedClosesBoth(t *testing.T) {
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	br, done := startBridge(t, in, out)
	waitIdle(t, br, 0, 1)

	resetEndsBridge(t, client, upstream, done)
}

func TestParkerResumesSocketClosedBehindItsBack(t *testing.T) {
	keepAttached(t) // a detached socket cannot be closed behind the bridge's back
	_, in := tcpPair(t)
	out, _ := tcpPair(t)
	br, done := startBridge(t, in, out)
	waitIdle(t, br, 0, 1)

	in.Close() // not through the bridge: epoll forgets it silently
	idleParker.resumeClosed()
	if r := waitResult(t, done); !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("bridge reported %v, want net.ErrClosed", r.err)
	}
	if parked(br, 0) || parked(br, 1) {
		t.Error("a closed socket is still parked")
	}
}

// endHalfClosed ends a bridge that has carried "hello" and "world!" twice:
// the client half-closes, which must reach upstream; once the remaining
// direction is idle (and idle has run), upstream sends "late" and
// half-closes, and the bridge must end cleanly with 10 and 16 bytes.
func endHalfClosed(t *testing.T, br *Bridge, done <-chan relayResult, client, upstream *net.TCPConn, idle func()) {
	t.Helper()
	client.CloseWrite()
	expectEOF(t, upstream)
	waitIdle(t, br, 1)
	idle()
	io.WriteString(upstream, "late")
	upstream.CloseWrite()
	if b, err := io.ReadAll(client); err != nil || string(b) != "late" {
		t.Fatalf("client read %q, %v", b, err)
	}
	r := waitResult(t, done)
	if r.err != nil || r.aToB != 10 || r.bToA != 16 {
		t.Fatalf("bridge = %d, %d, %v; want 10, 16, nil", r.aToB, r.bToA, r.err)
	}
}

// keepAttached turns detaching off for the test.
func keepAttached(t *testing.T) {
	idleParker.keepAttached.Store(true)
	t.Cleanup(func() { idleParker.keepAttached.Store(false) })
}

// runFunc adapts a function to a parkEntry's resume.
type runFunc func()

func (f runFunc) run() { f() }

// parkEntryFor is a parker entry for c calling resume.
func parkEntryFor(t *testing.T, c *net.TCPConn, resume func()) *parkEntry {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return &parkEntry{rc: rc, resume: runFunc(resume)}
}

func TestParkRefusesClosedSocket(t *testing.T) {
	a, _ := tcpPair(t)
	e := parkEntryFor(t, a, func() { t.Error("resumed a socket that was never parked") })
	a.Close()
	if idleParker.park(e) {
		t.Fatal("parked a closed socket")
	}
	if idleParker.take(e) {
		t.Fatal("took back a socket that was never parked")
	}
}

func TestParkerWakesOnData(t *testing.T) {
	a, b := tcpPair(t)
	woken := make(chan struct{}, 2)
	e := parkEntryFor(t, b, func() { woken <- struct{}{} })
	for range 2 { // the second parking re-arms the same registration
		if !idleParker.park(e) {
			t.Fatal("park failed")
		}
		select {
		case <-woken:
			t.Fatal("woken with nothing to read")
		case <-time.After(testLinger):
		}
		io.WriteString(a, "x")
		select {
		case <-woken:
		case <-time.After(failTimeout):
			t.Fatal("not woken by data")
		}
		expectRead(t, b, "x")
	}
	// Taken back before anything arrives: no wake-up.
	if !idleParker.park(e) || !idleParker.take(e) {
		t.Fatal("park then take failed")
	}
	io.WriteString(a, "y")
	select {
	case <-woken:
		t.Fatal("woken after take")
	case <-time.After(testLinger):
	}
}

// tunnelEnv is an HBONE server whose handler bridges each tunnel to a TCP
// connection the test holds.
type tunnelEnv struct {
	*testEnv
	bridges chan *Bridge
	results chan relayResult
	ups     chan *net.TCPConn
}

func newTunnelEnv(t *testing.T) *tunnelEnv { return newTunnelEnvLinger(t, testLinger) }

// newTunnelEnvLinger is newTunnelEnv with the bridges' linger set.
func newTunnelEnvLinger(t *testing.T, linger time.Duration) *tunnelEnv {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	te := &tunnelEnv{bridges: make(chan *Bridge, 1), results: make(chan relayResult, 1), ups: make(chan *net.TCPConn, 1)}
	te.testEnv = newTestEnv(t, HandlerFunc(func(ctx context.Context, req *Incoming) error {
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return ErrUnreachable
		}
		c, err := ln.AcceptTCP()
		if err != nil {
			return ErrUnreachable
		}
		t.Cleanup(func() { c.Close() })
		st, err := req.Hijack()
		if err != nil {
			return err
		}
		br := NewBridge(st, up)
		br.linger = linger
		br.Start(func(ab, ba int64, err error) { te.results <- relayResult{ab, ba, err} })
		te.bridges <- br
		te.ups <- c
		return nil
	}))
	return te
}

func TestBridgeStreamToSocketHoldsNoGoroutineWhenIdle(t *testing.T) {
	te := newTunnelEnv(t)
	st := te.dial(t)
	defer st.Close()
	br, up := <-te.bridges, <-te.ups
	waitIdle(t, br, 1) // the stream side has no drainer, the socket side is parked

	for range 2 {
		io.WriteString(st, "hello") // a drainer starts for it
		expectRead(t, up, "hello")
		io.WriteString(up, "world!") // the parker resumes the socket side
		expectRead(t, st, "world!")
		waitIdle(t, br, 1)
	}

	st.CloseWrite() // END_STREAM starts a drainer, which half-closes
	expectEOF(t, up)
	waitIdle(t, br, 1)
	io.WriteString(up, "late")
	up.CloseWrite()
	if b, err := io.ReadAll(st); err != nil || string(b) != "late" {
		t.Fatalf("client read %q, %v", b, err)
	}
	r := waitResult(t, te.results)
	if r.err != nil || r.aToB != 10 || r.bToA != 16 {
		t.Fatalf("bridge = %d, %d, %v; want 10, 16, nil", r.aToB, r.bToA, r.err)
	}
}

func TestBridgeEndsWhenIdleStreamsConnectionDies(t *testing.T) {
	te := newTunnelEnv(t)
	st := te.dial(t)
	defer st.Close()
	br, up := <-te.bridges, <-te.ups
	waitIdle(t, br, 1)

	te.client.Close() // the HTTP/2 connection goes: the stream fails
	r := waitResult(t, te.results)
	if !errors.Is(r.err, ErrConnClosed) {
		t.Errorf("bridge reported %v, want ErrConnClosed", r.err)
	}
	expectEOF(t, up)
	if parked(br, 1) {
		t.Error("the socket side is still parked")
	}
}

func TestBridgeClosedWhileIdleEndsStream(t *testing.T) {
	te := newTunnelEnv(t)
	st := te.dial(t)
	defer st.Close()
	br, up := <-te.bridges, <-te.ups
	waitIdle(t, br, 1)

	br.Close()
	if r := waitResult(t, te.results); !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("bridge reported %v, want net.ErrClosed", r.err)
	}
	expectEOF(t, up)
	expectEOF(t, st) // END_STREAM, then RST_STREAM: the client was still sending
	until(t, "the bridge's goroutines end", func() bool { return bridgeGoroutines() == 0 })
}

// Data for a stream whose socket can take it is written by the session's
// read loop itself: no drainer goroutine starts (one would linger for a
// minute here), and the byte counts still add up.
func TestBridgeWritesSmallMessagesInline(t *testing.T) {
	te := newTunnelEnvLinger(t, time.Minute)
	st := te.dial(t)
	defer st.Close()
	<-te.bridges
	up := <-te.ups
	for i := range 50 {
		io.WriteString(st, "hello")
		expectRead(t, up, "hello")
		if n := drainers(); n != 0 {
			t.Fatalf("message %d: %d drainer goroutines running, want 0 (written inline)", i, n)
		}
	}
	st.CloseWrite() // END_STREAM: a drainer half-closes the socket
	expectEOF(t, up)
	up.CloseWrite()
	expectEOF(t, st)
	r := waitResult(t, te.results)
	if r.err != nil || r.aToB != 250 || r.bToA != 0 {
		t.Fatalf("bridge = %d, %d, %v; want 250, 0, nil", r.aToB, r.bToA, r.err)
	}
}

// drainers counts the goroutines in Stream.drain.
func drainers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("hbone.(*Stream).drain("))
}

// detachParked has the parker detach its parked sockets, as its sweep
// does, and waits until want sockets are detached.
func detachParked(t *testing.T, want int) {
	t.Helper()
	idleParker.detachParked()
	until(t, fmt.Sprintf("%d sockets are detached", want), func() bool { return DetachedSockets() == want })
}

// attached reports whether each side of br is a socket held in the net
// package (false: detached, or not a socket).
func attached(br *Bridge) [2]bool {
	var out [2]bool
	for i, side := range []io.ReadWriteCloser{br.a, br.b} {
		if h, ok := side.(*heldSock); ok {
			out[i] = h.inNet()
		}
	}
	return out
}

// openSockets counts the process's open descriptors of sockets (splice's
// cached pipes come and go with collections).
func openSockets(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// epollTargets lists the descriptors registered with the parker's epoll
// instance (the kernel's own account: /proc/self/fdinfo).
func epollTargets(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", idleParker.epollFD()))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, line := range strings.Split(string(b), "\n") {
		var fd int
		if _, err := fmt.Sscanf(line, "tfd: %d", &fd); err == nil {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	return fds
}

// heldFDs lists the descriptors of br's detached sockets.
func heldFDs(br *Bridge) []int {
	var fds []int
	for _, side := range []io.ReadWriteCloser{br.a, br.b} {
		if h, ok := side.(*heldSock); ok {
			h.mu.Lock()
			if h.c == nil && !h.closed {
				fds = append(fds, h.fd)
			}
			h.mu.Unlock()
		}
	}
	slices.Sort(fds)
	return fds
}

// detachedBridge starts a Bridge between two loopback connections, waits
// until it is idle and has its sockets detached, and returns the outer ends,
// the Bridge, its result, and how many sockets were detached and open
// before it.
func detachedBridge(t *testing.T) (client, upstream *net.TCPConn, br *Bridge, done <-chan relayResult, before, sockets int) {
	t.Helper()
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	before, sockets = DetachedSockets(), openSockets(t)
	br, done = startBridge(t, in, out)
	waitIdle(t, br, 0, 1)
	detachParked(t, before+2)
	return client, upstream, br, done, before, sockets
}

// An idle bridge's sockets leave the net package (same descriptors in
// number, no FIN to either peer) and come back for data both ways, a
// half-close each way and the end, with the byte counts whole.
func TestBridgeDetachesIdleSocketsAndAttachesThemForData(t *testing.T) {
	client, upstream, br, done, before, fds := detachedBridge(t)
	if a := attached(br); a[0] || a[1] {
		t.Fatalf("attached after the sweep: %v", a)
	}
	if n := openSockets(t); n != fds {
		t.Fatalf("%d descriptors open with the sockets detached, want %d", n, fds)
	}
	// Each socket is registered once, by its new descriptor: a registration
	// left on the closed one would live as long as the socket.
	if got, want := epollTargets(t), heldFDs(br); !slices.Equal(got, want) {
		t.Fatalf("parker's epoll set holds descriptors %v, want the detached sockets' %v", got, want)
	}
	for range 2 { // detached, woken by data, parked and detached again
		io.WriteString(client, "hello")
		expectRead(t, upstream, "hello")
		io.WriteString(upstream, "world!")
		expectRead(t, client, "world!")
		waitIdle(t, br, 0, 1)
		detachParked(t, before+2)
	}

	endHalfClosed(t, br, done, client, upstream, func() {
		detachParked(t, before+1) // the upstream side, still open one way
	})
	if n := DetachedSockets(); n != before {
		t.Errorf("%d sockets detached after the bridge ended, want %d", n, before)
	}
	client.Close()
	upstream.Close()
	until(t, "the descriptors are closed", func() bool { return openSockets(t) == fds-4 })
}

// A detached socket written to from the other side (a half-close here,
// which attaches it) must still wake its reading direction afterwards:
// its parker registration moves to the new descriptor.
func TestBridgeDetachedSocketAttachedByWriterStillWakesReader(t *testing.T) {
	te := newTunnelEnv(t)
	st := te.dial(t)
	defer st.Close()
	br, up := <-te.bridges, <-te.ups
	before := DetachedSockets()
	waitIdle(t, br, 1)
	detachParked(t, before+1)
	keepAttached(t) // no sweep may re-register the socket behind the test
	up.SetDeadline(time.Now().Add(failTimeout))
	st.SetDeadline(time.Now().Add(failTimeout))

	io.WriteString(st, "inline") // the session's read loop writes to the bare descriptor
	expectRead(t, up, "inline")
	if a := attached(br); a[1] {
		t.Fatal("an inline write attached the socket")
	}
	st.CloseWrite() // a drainer half-closes the socket: attached
	expectEOF(t, up)
	if a := attached(br); !a[1] {
		t.Fatal("the socket is still detached after the half-close")
	}
	io.WriteString(up, "late") // the parked direction must wake
	expectRead(t, st, "late")
	up.CloseWrite()
	expectEOF(t, st)
	r := waitResult(t, te.results)
	if r.err != nil || r.aToB != 6 || r.bToA != 4 {
		t.Fatalf("bridge = %d, %d, %v; want 6, 4, nil", r.aToB, r.bToA, r.err)
	}
}

func TestBridgeCloseWhileDetached(t *testing.T) {
	client, upstream, br, done, before, fds := detachedBridge(t)

	br.Close()
	if r := waitResult(t, done); !errors.Is(r.err, net.ErrClosed) {
		t.Errorf("bridge closed while detached reported %v, want net.ErrClosed", r.err)
	}
	expectEOF(t, client)
	expectEOF(t, upstream)
	if n := DetachedSockets(); n != before {
		t.Errorf("%d sockets detached after the close, want %d", n, before)
	}
	if n := openSockets(t); n != fds-2 {
		t.Errorf("%d descriptors open after the close, want %d", n, fds-2)
	}
	until(t, "the bridge's goroutines end", func() bool { return bridgeGoroutines() == 0 })
}

func TestBridgeResetWhileDetachedClosesBoth(t *testing.T) {
	client, upstream, _, done, _, _ := detachedBridge(t)

	resetEndsBridge(t, client, upstream, done)
}

// waitCounts waits until br has counted aToB and bToA bytes.
func waitCounts(t *testing.T, br *Bridge, aToB, bToA int64) {
	t.Helper()
	until(t, fmt.Sprintf("the bridge counts %d and %d bytes", aToB, bToA), func() bool {
		a, b := br.Counts()
		return a == aToB && b == bToA
	})
}

// Counts follow the bytes while the Bridge runs, whichever path copies
// them (splice between sockets; a socket into a Stream; a Stream out to a
// socket by its session's read loop or a drainer), and end equal to what
// the Bridge reports.
func TestBridgeCountsBytesWhileOpen(t *testing.T) {
	t.Run("sockets", func(t *testing.T) {
		client, in := tcpPair(t)
		out, upstream := tcpPair(t)
		br, done := startBridge(t, in, out)
		io.WriteString(client, "hello")
		expectRead(t, upstream, "hello")
		waitCounts(t, br, 5, 0)
		big := strings.Repeat("x", 3*spliceChunk/2)
		go io.WriteString(upstream, big)
		expectRead(t, client, big)
		waitCounts(t, br, 5, int64(len(big)))
		client.CloseWrite()
		upstream.CloseWrite()
		r := waitResult(t, done)
		if a, b := br.Counts(); r.aToB != a || r.bToA != b || a != 5 {
			t.Fatalf("bridge reported %d, %d; counts %d, %d", r.aToB, r.bToA, a, b)
		}
	})
	t.Run("stream and socket", func(t *testing.T) {
		te := newTunnelEnv(t)
		st := te.dial(t)
		defer st.Close()
		br, up := <-te.bridges, <-te.ups
		io.WriteString(st, "inline") // written by the session's read loop
		expectRead(t, up, "inline")
		waitCounts(t, br, 6, 0)
		big := strings.Repeat("y", 1<<20) // more than the socket takes at once: a drainer
		go io.WriteString(st, big)
		expectRead(t, up, big)
		waitCounts(t, br, int64(6+len(big)), 0)
		io.WriteString(up, "back")
		expectRead(t, st, "back")
		waitCounts(t, br, int64(6+len(big)), 4)
		st.CloseWrite()
		up.CloseWrite()
		r := waitResult(t, te.results)
		if a, b := br.Counts(); r.aToB != a || r.bToA != b || b != 4 {
			t.Fatalf("bridge reported %d, %d; counts %d, %d", r.aToB, r.bToA, a, b)
		}
	})
}
