package hbone

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// IdleLinger is how long a direction of a Bridge may have nothing to copy
// before it gives up its goroutine. Traffic with shorter gaps (request and
// response, polling up to about once a second) never parks, so it pays
// nothing; an idle connection holds its goroutines this long after its
// last byte, which does not matter for what thousands of idle connections
// cost.
const IdleLinger = time.Second

// Relay copies between a and b in both directions until both directions
// have ended, then closes both. When one side finishes sending (io.EOF),
// Relay half-closes the other with CloseWrite if it has one, so half-close
// propagates end to end; when a copy fails, both sides are closed at once,
// which ends the other copy too. It returns the bytes copied each way and
// the first error (nil when both directions ended cleanly).
//
// Relay is a Bridge waited for; see Bridge for how the copies are done.
func Relay(a, b io.ReadWriteCloser) (aToB, bToA int64, err error) {
	done := make(chan struct{})
	NewBridge(a, b).Start(func(ab, ba int64, e error) {
		aToB, bToA, err = ab, ba, e
		close(done)
	})
	<-done
	return aToB, bToA, err
}

// A Bridge relays between two connections in the background, as Relay
// does, and holds no goroutine while neither direction has anything to
// copy, so that an idle tunnel costs memory for its buffers and state
// only:
//
//   - A direction reading a socket (*net.TCPConn, *net.UnixConn) copies in
//     a goroutine while data flows; once the socket has had nothing to read
//     for IdleLinger, the goroutine hands the socket to a process-wide
//     parker (one epoll instance and one goroutine for all idle sockets)
//     and exits; the parker starts another when the socket becomes
//     readable (data, FIN, error). A parked socket also leaves the net
//     package (heldSock): its descriptor is duplicated and its net.Conn
//     closed, which frees about a kilobyte per socket; the next read,
//     write or close makes a net.Conn for it again. The Bridge owns a and
//     b: do not use or close them but through it.
//   - A direction reading a Stream has no goroutine waiting for data: the
//     stream's session starts one when data (or the end, or an error)
//     arrives, which writes it out (one writev(2) to a socket) and exits
//     after IdleLinger without any.
//   - Any other reader is copied by a goroutine blocked in Read.
//
// Copies take the cheapest path available: splice(2) between two kernel
// sockets, straight out of a Stream's receive buffers, or through a pooled
// buffer held only while data flows.
type Bridge struct {
	a, b   io.ReadWriteCloser
	linger time.Duration

	mu      sync.Mutex
	started bool
	failed  bool // a and b are closed
	first   error
	left    int // directions still copying
	// n counts the bytes copied each way (0: a to b) as they are copied:
	// Counts reads them while the Bridge runs.
	n     [2]atomic.Int64
	done  func(aToB, bToA int64, err error)
	socks [2]*sockHalf // directions reading a parkable socket
}

// NewBridge returns a Bridge between a and b. It starts nothing.
func NewBridge(a, b io.ReadWriteCloser) *Bridge {
	return &Bridge{a: holdSocket(a), b: holdSocket(b), linger: IdleLinger}
}

// Start starts copying; it must be called once. When both directions have
// ended and a and b are closed, done is called (once, from a goroutine of
// the Bridge) with what Relay would return. Half-close and errors
// propagate as in Relay.
func (br *Bridge) Start(done func(aToB, bToA int64, err error)) {
	br.mu.Lock()
	if br.started {
		br.mu.Unlock()
		panic("hbone: Bridge started twice")
	}
	br.started, br.done, br.left = true, done, 2
	br.mu.Unlock()
	br.startHalf(0, br.b, br.a)
	br.startHalf(1, br.a, br.b)
}

// Close closes both connections now (before Start too), parked or not;
// the copies end and done reports net.ErrClosed unless something failed
// first.
func (br *Bridge) Close() {
	br.fail(net.ErrClosed)
}

// startHalf starts copying src to dst, direction i (0: a to b).
func (br *Bridge) startHalf(i int, dst io.Writer, src io.Reader) {
	if st, ok := src.(*Stream); ok {
		st.drainToBridge(br, i, dst)
		return
	}
	if h := newSockHalf(br, i, dst, src); h != nil {
		br.mu.Lock()
		br.socks[i] = h
		br.mu.Unlock()
		go h.run()
		return
	}
	go func() {
		_, err := copyIdle(dst, src, &br.n[i])
		br.halfDone(i, dst, err)
	}()
}

// Counts reports the bytes copied so far each way, a to b and b to a.
// They grow as data is copied (a spliced copy adds up to spliceChunk at a
// time), so that long-lived connections can be accounted while open; once
// the Bridge has ended they are what done was given.
func (br *Bridge) Counts() (aToB, bToA int64) {
	return br.n[0].Load(), br.n[1].Load()
}

// halfDone ends direction i: at the end of its source (err nil) it
// half-closes dst; on an error it closes both sides. The last direction to
// end closes both and reports.
func (br *Bridge) halfDone(i int, dst io.Writer, err error) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cerr := cw.CloseWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = cerr
			}
		}
	}
	if err != nil {
		br.fail(err)
	}
	br.mu.Lock()
	br.left--
	last := br.left == 0
	br.mu.Unlock()
	if !last {
		return
	}
	br.fail(nil) // closes both if nothing failed
	br.mu.Lock()
	aToB, bToA, first, done := br.n[0].Load(), br.n[1].Load(), br.first, br.done
	br.mu.Unlock()
	done(aToB, bToA, first)
}

// fail closes both sides, once, recording err as the first error, and
// wakes the directions parked on their sockets so that they end.
func (br *Bridge) fail(err error) {
	br.mu.Lock()
	if br.failed {
		br.mu.Unlock()
		return
	}
	br.failed, br.first = true, err
	socks := br.socks
	br.mu.Unlock()
	br.a.Close()
	br.b.Close()
	// After the close: a direction that parks from now on fails to, and
	// one parked before is taken back here, so none is left behind.
	for _, h := range socks {
		if h != nil {
			h.unpark()
		}
	}
}

// spliceChunk is how much a spliced copy moves before it counts progress.
const spliceChunk = 4 << 20

// copyIdle copies src to dst, spliced between two sockets, else through a
// buffer held only while data flows (straight into the frames of a
// Stream); progress (if not nil) counts the bytes as they are written.
func copyIdle(dst io.Writer, src io.Reader, progress *atomic.Int64) (int64, error) {
	if isSocket(dst) && isSocket(src) {
		// net.TCPConn.ReadFrom splices, a LimitedReader too.
		var total int64
		lr := &io.LimitedReader{R: src}
		for {
			lr.N = spliceChunk
			n, err := io.Copy(dst, lr)
			total += n
			addProgress(progress, n)
			if err != nil || n < spliceChunk {
				return total, err
			}
		}
	}
	return copyDrained(dst, src, progress)
}

func addProgress(progress *atomic.Int64, n int64) {
	if progress != nil {
		progress.Add(n)
	}
}

// copyDrained copies r to w through a pooled buffer taken only once r
// has data (pooledReader), so idle connections cost no buffer. Reads grow
// from a chunk to bigSize while each fills its buffer. progress (if not
// nil) counts the bytes as they are written.
func copyDrained(w io.Writer, r io.Reader, progress *atomic.Int64) (int64, error) {
	var total int64
	pr := newPooledReader(r)
	for {
		bp, n, err := pr.read()
		if n > 0 {
			m, werr := w.Write((*bp)[:n])
			total += int64(m)
			addProgress(progress, int64(m))
			full := n == len(*bp)
			putBuffer(bp, pr.big)
			pr.big = full
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func isSocket(v any) bool {
	switch v.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// socketRaw returns v's RawConn if v is a socket (isSocket, or a heldSock),
// else nil.
func socketRaw(v any) syscall.RawConn {
	if h, ok := v.(*heldSock); ok {
		return (*heldRaw)(h)
	}
	if !isSocket(v) {
		return nil
	}
	rc, err := v.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
