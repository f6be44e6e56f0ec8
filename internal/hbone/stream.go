package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

// Stream is one HBONE tunnel: a byte stream carried by an HTTP/2 CONNECT
// stream. It is a net.Conn: one Read and one Write may run at the same
// time, deadlines work as for TCP, and CloseWrite half-closes (the peer
// reads io.EOF and may keep sending). Close ends both directions; if the
// peer is still sending, the stream is reset.
type Stream struct {
	sess *session
	id   uint32
	// Client side: the response status, 0 until resp is closed; resp is
	// nil once closed. Guarded by sess.mu.
	status int32

	readMu  sync.Mutex
	writeMu sync.Mutex // also held by Close and CloseWrite to order END_STREAM after data
	// dl holds the deadlines, made when one is first set: most streams
	// never have one.
	dl atomic.Pointer[streamDeadlines]

	// Guarded by sess.mu.
	// readWake and writeWake wake a reader (holding readMu) or a writer
	// (holding writeMu) waiting for data or credit. They are made when one
	// first waits, and an idle drainer drops readWake: an idle tunnel
	// keeps no channel.
	readWake    chan struct{}
	writeWake   chan struct{}
	buf         dataBuffer
	sink        *sink // set while drainTo is writing the stream out
	recvErr     error
	recvWindow  int64 // credit the peer holds on this stream
	recvUnacked int64
	sendWindow  int64
	sendErr     error
	// Together, so that they share a word: tens of thousands of idle
	// streams are held at once.
	peeking bool // WriteTo or a drainer is writing out of buf's chunks
	recvEnd bool // peer sent END_STREAM
	sentEnd bool
	closed  bool // Close was called
	removed bool // no longer in sess.streams

	resp chan struct{}
	// Server side: the handler's context, canceled when the stream is over
	// or the handler has returned, and then dropped.
	ctx    context.Context
	cancel context.CancelFunc
}

var errWriteAfterCloseWrite = errors.New("hbone: write after CloseWrite")

func (s *session) newStreamLocked(id uint32) *Stream {
	st := &Stream{
		sess:       s,
		id:         id,
		recvWindow: streamWindow,
		sendWindow: s.peerInitialWindow,
	}
	if s.client {
		st.resp = make(chan struct{})
	} else {
		st.ctx, st.cancel = context.WithCancel(s.ctx)
	}
	s.streams[id] = st
	return st
}

// Read reads tunnelled bytes; it returns io.EOF once the peer has
// half-closed and everything it sent has been read.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st.readMu.Lock()
	defer st.readMu.Unlock()
	if err := st.lockReadable(); err != nil {
		return 0, err
	}
	n := st.buf.read(p)
	st.sess.creditLocked(st, int64(n))
	st.sess.mu.Unlock()
	return n, nil
}

// WriteTo writes what the stream receives to w until the peer half-closes,
// straight out of the receive buffers, all that is buffered at once (one
// writev(2) when w is a socket). It makes io.Copy from a Stream copy-free.
func (st *Stream) WriteTo(w io.Writer) (int64, error) {
	st.readMu.Lock()
	defer st.readMu.Unlock()
	var total int64
	for {
		if err := st.lockReadable(); errors.Is(err, io.EOF) {
			return total, nil
		} else if err != nil {
			return total, err
		}
		n, err := st.writeOutLocked(w)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// writeOutLocked writes everything buffered to w (one writev(2) when w is
// a socket) and consumes what was written. It is called holding readMu and
// sess.mu, with data buffered, and returns without sess.mu.
func (st *Stream) writeOutLocked(w io.Writer) (int64, error) {
	s := st.sess
	iov := iovPool.Get().(*[][]byte)
	*iov = st.buf.peekAll((*iov)[:0])
	bufs := net.Buffers(*iov)
	st.peeking = true
	s.mu.Unlock()

	n, err := bufs.WriteTo(w)
	clear(*iov)
	iovPool.Put(iov)

	s.mu.Lock()
	st.peeking = false
	if st.closed {
		s.creditLocked(nil, int64(st.buf.reset())) // Close left the buffer to us
	} else {
		st.buf.advance(int(n))
		s.creditLocked(st, n)
	}
	s.mu.Unlock()
	return n, err
}

// iovPool holds the vectors writeOutLocked hands to writev: a stream keeps
// none of its own (an idle stream's after bulk data would be kilobytes).
var iovPool = sync.Pool{New: func() any { return new([][]byte) }}

// sink is where drainTo writes a stream out.
type sink struct {
	w      io.Writer
	raw    syscall.RawConn // w's, when w is a socket: the read loop may write to it itself
	linger time.Duration
	// When the stream has ended: br.halfDone(half, ...) if br is set (no
	// closure to allocate per tunnel), else done.
	br      *Bridge
	half    int
	done    func(int64, error)
	n       int64 // written so far; the running drainer's
	inline  int64 // written by the session's read loop; guarded by sess.mu
	running bool  // a drainer goroutine is running; guarded by sess.mu
}

// writeInlineLocked writes data straight to the sink's socket from the
// session's read loop, if nothing is queued before it, and as much as the
// socket takes without blocking. Request/response traffic then needs no
// drainer to wake (a hand-off between threads per message, tens of
// microseconds here) and no copy into the receive buffer. It returns what
// it wrote; the caller buffers the rest for a drainer, which also meets
// any error the socket has. sess.mu is held (the write never blocks).
func (st *Stream) writeInlineLocked(data []byte) int {
	k := st.sink
	if k == nil || k.raw == nil || st.peeking || st.buf.len() > 0 || st.closed || len(data) == 0 {
		return 0
	}
	n := writeNow(k.raw, data)
	k.inline += int64(n)
	if k.br != nil {
		k.br.n[k.half].Add(int64(n))
	}
	return n
}

// drainTo is WriteTo without a goroutine waiting for data: the session's
// read loop starts a drainer goroutine when something arrives (data, the
// end, an error, Close) and none is running; the drainer writes out what
// is buffered as WriteTo does and exits once the stream has had nothing to
// write for linger. done is called once, from a drainer, with the bytes
// written and what ended the stream (nil for the peer's END_STREAM). A
// drainer honours the read deadline only while it runs.
func (st *Stream) drainTo(w io.Writer, linger time.Duration, done func(int64, error)) {
	st.startSink(&sink{w: w, linger: linger, done: done})
}

// drainToBridge is drainTo for direction half of br.
func (st *Stream) drainToBridge(br *Bridge, half int, w io.Writer) {
	st.startSink(&sink{w: w, linger: br.linger, br: br, half: half})
}

func (st *Stream) startSink(k *sink) {
	s := st.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	k.raw = socketRaw(k.w)
	st.sink = k
	if st.buf.len() > 0 || st.readErrLocked() != nil {
		st.kickLocked()
	}
}

// wakeReaderLocked tells the reader that there is something to read (or a
// reason there is nothing more): a blocked Read or WriteTo, or drainTo,
// which starts a drainer for it.
func (st *Stream) wakeReaderLocked() {
	if st.readWake != nil {
		wake(st.readWake)
	}
	st.kickLocked()
}

// wakeWriterLocked tells a writer waiting for credit to look again.
func (st *Stream) wakeWriterLocked() {
	if st.writeWake != nil {
		wake(st.writeWake)
	}
}

// readWaitLocked returns the channel a reader waits on.
func (st *Stream) readWaitLocked() chan struct{} {
	if st.readWake == nil {
		st.readWake = make(chan struct{}, 1)
	}
	return st.readWake
}

// writeWaitLocked returns the channel a writer waits on.
func (st *Stream) writeWaitLocked() chan struct{} {
	if st.writeWake == nil {
		st.writeWake = make(chan struct{}, 1)
	}
	return st.writeWake
}

func (st *Stream) kickLocked() {
	if k := st.sink; k != nil && !k.running {
		k.running = true
		go st.drain(k)
	}
}

// drain is drainTo's goroutine: it writes out what arrives until the
// stream ends (then it calls k.done) or it has had nothing to write for
// k.linger (then it exits and the next arrival starts another).
func (st *Stream) drain(k *sink) {
	s := st.sess
	st.readMu.Lock()
	idle := time.NewTimer(k.linger)
	defer idle.Stop()
	wrote := false // in this linger period
	// A held socket stays attached while its drainer runs.
	w, h, err := acquire(k.w)
	if h != nil {
		defer h.done()
	}
	for err == nil {
		if isClosed(st.readDeadline()) {
			err = os.ErrDeadlineExceeded
			break
		}
		s.mu.Lock()
		if st.buf.len() > 0 && !st.closed {
			n, werr := st.writeOutLocked(w)
			k.n += n
			if k.br != nil {
				k.br.n[k.half].Add(n)
			}
			wrote = true
			if werr != nil {
				err = werr
				break
			}
			continue
		}
		if rerr := st.readErrLocked(); rerr != nil {
			s.mu.Unlock()
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
		woken := st.readWaitLocked()
		s.mu.Unlock()
		select {
		case <-woken:
		case <-st.readDeadline():
		case <-idle.C:
			idle.Reset(k.linger)
			if wrote {
				wrote = false
				continue
			}
			s.mu.Lock()
			if st.buf.len() == 0 && st.readErrLocked() == nil {
				k.running = false // the next wakeReaderLocked starts another
				st.readWake = nil // no reader waits (this one holds readMu)
				s.mu.Unlock()
				st.readMu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	st.sink = nil // k.running stays set: no drainer starts again
	n := k.n + k.inline
	s.mu.Unlock()
	st.readMu.Unlock()
	if k.br != nil {
		k.br.halfDone(k.half, k.w, err)
	} else {
		k.done(n, err)
	}
}

// lockReadable waits until data is buffered and returns holding sess.mu,
// or returns (without the lock) why nothing more can be read: io.EOF at
// the end, a deadline, a reset, Close.
func (st *Stream) lockReadable() error {
	s := st.sess
	for {
		if isClosed(st.readDeadline()) {
			return os.ErrDeadlineExceeded
		}
		s.mu.Lock()
		if st.buf.len() > 0 && !st.closed {
			return nil
		}
		err := st.readErrLocked()
		var woken chan struct{}
		if err == nil {
			woken = st.readWaitLocked()
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-woken:
		case <-st.readDeadline():
		}
	}
}

// readErrLocked says why there is nothing to read, or nil if more may come.
func (st *Stream) readErrLocked() error {
	switch {
	case st.closed:
		return net.ErrClosed
	case st.recvEnd:
		return io.EOF
	}
	return st.recvErr
}

// Write sends p, waiting for HTTP/2 flow-control credit as needed.
func (st *Stream) Write(p []byte) (n int, err error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	unflushed := false
	defer func() {
		if unflushed {
			if ferr := st.sess.flush(); err == nil {
				err = ferr
			}
		}
	}()
	for len(p) > 0 {
		k, err := st.reserveSend(len(p), unflushed)
		if err != nil {
			return n, err
		}
		last := k == len(p)
		if err := st.sess.writeData(st.id, false, p[:k], last); err != nil {
			return n, err
		}
		unflushed = !last
		n += k
		p = p[k:]
	}
	return n, nil
}

// ReadFrom sends everything r yields until io.EOF, through a pooled buffer
// held only while data flows: once r is drained (a short read) it waits for
// more without one, so idle connections cost no buffer. It does not
// half-close the stream.
func (st *Stream) ReadFrom(r io.Reader) (int64, error) {
	return copyDrained(st, r, nil)
}

// writeErrLocked says why the stream cannot send, or nil if it can.
func (st *Stream) writeErrLocked() error {
	switch {
	case st.closed:
		return net.ErrClosed
	case st.sentEnd:
		return errWriteAfterCloseWrite
	}
	return st.sendErr
}

// reserveSend waits until it may send up to max bytes and takes the
// credit. If it must wait and unflushed is set, it flushes first: the
// peer's credit may depend on what it has not received yet.
func (st *Stream) reserveSend(max int, unflushed bool) (int, error) {
	s := st.sess
	for {
		if isClosed(st.writeDeadline()) {
			return 0, os.ErrDeadlineExceeded
		}
		s.mu.Lock()
		if err := st.writeErrLocked(); err != nil {
			s.mu.Unlock()
			return 0, err
		}
		k := min(int64(max), st.sendWindow, s.sendWindow, int64(s.peerMaxFrame), maxWriteFrame)
		if k > 0 {
			st.sendWindow -= k
			s.sendWindow -= k
			s.mu.Unlock()
			return int(k), nil
		}
		woken := st.writeWaitLocked()
		s.mu.Unlock()
		if unflushed {
			if err := s.flush(); err != nil {
				return 0, err
			}
			unflushed = false
		}
		select {
		case <-woken:
		case <-st.writeDeadline():
		}
	}
}

// CloseWrite half-closes the stream (END_STREAM): the peer reads io.EOF
// after the data already written, and this end can still read.
func (st *Stream) CloseWrite() error {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	s := st.sess
	s.mu.Lock()
	done := st.sentEnd && !st.closed
	err := st.writeErrLocked()
	s.mu.Unlock()
	if done {
		return nil // already half-closed
	}
	if err != nil {
		return err
	}
	if err := s.writeData(st.id, true, nil, true); err != nil {
		return err
	}
	s.mu.Lock()
	st.sentEnd = true
	s.maybeRemoveLocked(st)
	s.mu.Unlock()
	return nil
}

// Close ends the stream. Like closing a TCP socket, it sends what is
// needed for the peer to read io.EOF, and resets the stream (CANCEL) if
// the peer has not finished sending. Blocked Reads and Writes return
// net.ErrClosed.
func (st *Stream) Close() error {
	s := st.sess
	s.mu.Lock()
	if st.closed {
		s.mu.Unlock()
		return nil
	}
	st.closed = true
	st.wakeReaderLocked()
	st.wakeWriterLocked()
	s.mu.Unlock()

	st.writeMu.Lock() // an in-flight Write finishes its frame first
	defer st.writeMu.Unlock()
	s.mu.Lock()
	sendEnd := !st.removed && !st.sentEnd && st.sendErr == nil
	reset := !st.removed && !st.recvEnd && st.recvErr == nil
	if !st.peeking {
		s.creditLocked(nil, int64(st.buf.reset()))
	}
	s.mu.Unlock()
	var err error
	if sendEnd {
		err = s.writeData(st.id, true, nil, true)
	}
	s.mu.Lock()
	st.sentEnd = true
	if reset {
		s.resetLocked(st, http2.ErrCodeCancel, net.ErrClosed)
	} else {
		s.maybeRemoveLocked(st)
	}
	s.mu.Unlock()
	if err != nil && !errors.Is(err, ErrConnClosed) {
		return err
	}
	return nil
}

// releaseContext ends the handler's context once ServeHBONE has returned,
// so that a hijacked stream does not keep it (with the children its
// context had, and its channel) for as long as the tunnel lasts.
func (st *Stream) releaseContext() {
	s := st.sess
	s.mu.Lock()
	cancel := st.cancel
	st.ctx, st.cancel = nil, nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Peer returns the verified SPIFFE identity of the other end.
func (st *Stream) Peer() spiffeid.ID { return st.sess.peer }

// LocalAddr returns the local address of the connection carrying the stream.
func (st *Stream) LocalAddr() net.Addr { return st.sess.nc.LocalAddr() }

// RemoteAddr returns the remote address of the connection carrying the stream.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	d := st.deadlines()
	d.r.set(t)
	d.w.set(t)
	st.wakeWaiters(t, true, true)
	return nil
}

// streamDeadlines are a stream's read and write deadlines.
type streamDeadlines struct{ r, w deadline }

// deadlines returns the stream's deadlines, making them if need be.
func (st *Stream) deadlines() *streamDeadlines {
	if d := st.dl.Load(); d != nil {
		return d
	}
	st.dl.CompareAndSwap(nil, &streamDeadlines{})
	return st.dl.Load()
}

// readDeadline returns a channel closed once the read deadline has passed
// (nil, never ready, when there is none).
func (st *Stream) readDeadline() chan struct{} {
	if d := st.dl.Load(); d != nil {
		return d.r.wait()
	}
	return nil
}

// writeDeadline is readDeadline for writes.
func (st *Stream) writeDeadline() chan struct{} {
	if d := st.dl.Load(); d != nil {
		return d.w.wait()
	}
	return nil
}

// wakeWaiters wakes a reader and a writer already waiting when a deadline
// is set: they may wait without one (a deadline's channel is made when it
// is first set), and look again.
func (st *Stream) wakeWaiters(t time.Time, read, write bool) {
	if t.IsZero() {
		return
	}
	st.sess.mu.Lock()
	defer st.sess.mu.Unlock()
	if read && st.readWake != nil {
		wake(st.readWake)
	}
	if write {
		st.wakeWriterLocked()
	}
}

// SetReadDeadline sets the deadline for Read and WriteTo; the zero time
// removes it.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.deadlines().r.set(t)
	st.wakeWaiters(t, true, false)
	return nil
}

// SetWriteDeadline sets the deadline for waiting on flow-control credit in
// Write, ReadFrom and CloseWrite; the zero time removes it.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.deadlines().w.set(t)
	st.wakeWaiters(t, false, true)
	return nil
}

// abortLocked fails what is left of the stream with err and forgets it.
// Data already received stays readable.
func (s *session) abortLocked(st *Stream, err error) {
	if !st.recvEnd && st.recvErr == nil {
		st.recvErr = err
	}
	if !st.sentEnd && st.sendErr == nil {
		st.sendErr = err
	}
	st.wakeReaderLocked()
	st.wakeWriterLocked()
	s.removeLocked(st)
}

// recvDoneLocked says whether the receiving side has ended, cleanly or
// not: frames for it are a protocol error.
func (st *Stream) recvDoneLocked() bool {
	return st.recvEnd || st.recvErr != nil
}

// resetLocked resets the stream (RST_STREAM) and aborts it.
func (s *session) resetLocked(st *Stream, code http2.ErrCode, err error) {
	if !st.removed {
		// A full queue drops the RST_STREAM: the stream is aborted here
		// regardless, and the peer flooding us is refused by the frame
		// that filled the queue.
		_ = s.queueLocked(ctrlFrame{typ: http2.FrameRSTStream, streamID: st.id, code: code})
	}
	s.abortLocked(st, err)
}

// resetStream resets a stream by id, known or not.
func (s *session) resetStream(id uint32, code http2.ErrCode, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		s.resetLocked(st, code, err)
		return
	}
	_ = s.queueLocked(ctrlFrame{typ: http2.FrameRSTStream, streamID: id, code: code}) // dropped when full, as in resetLocked
}

// maybeRemoveLocked forgets the stream once both directions have ended.
func (s *session) maybeRemoveLocked(st *Stream) {
	if st.recvEnd && st.sentEnd {
		s.removeLocked(st)
	}
}

func (s *session) removeLocked(st *Stream) {
	if st.removed {
		return
	}
	st.removed = true
	delete(s.streams, st.id)
	if st.resp != nil {
		close(st.resp) // Dial was waiting: it reads recvErr
		st.resp = nil
	}
	if st.cancel != nil {
		st.cancel()
	}
	if len(s.streams)+s.reserved == 0 {
		s.armIdleLocked()
		s.maybeFinishLocked()
	}
}

// creditLocked gives back n bytes of receive window, consumed or
// discarded, to the connection and (if st is not nil) to the stream,
// batching WINDOW_UPDATEs to a quarter window.
func (s *session) creditLocked(st *Stream, n int64) {
	if n <= 0 {
		return
	}
	s.recvUnacked += n
	if s.recvUnacked >= connWindow/4 {
		_ = s.queueLocked(ctrlFrame{typ: http2.FrameWindowUpdate, incr: uint32(s.recvUnacked)}) // WINDOW_UPDATE is never refused
		s.recvWindow += s.recvUnacked
		s.recvUnacked = 0
	}
	if st == nil || st.recvDoneLocked() {
		return
	}
	st.recvUnacked += n
	if st.recvUnacked >= streamWindow/4 {
		_ = s.queueLocked(ctrlFrame{typ: http2.FrameWindowUpdate, streamID: st.id, incr: uint32(st.recvUnacked)}) // never refused
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
	}
}
