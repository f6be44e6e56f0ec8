package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 settings of this end. The windows are Istio's (ztunnel's h2 config).
const (
	streamWindow     = 4 << 20  // receive window per stream
	connWindow       = 16 << 20 // receive window per connection
	maxReadFrame     = 64 << 10 // largest frame we accept; the Framer keeps a buffer this big
	maxWriteFrame    = 64 << 10 // largest DATA frame we send
	maxHeaderList    = 32 << 10 // room for W3C baggage (8 KiB) and more
	maxQueuedControl = 1024     // unwritten control frames before we call the peer abusive
	closeWriteGrace  = time.Second
	prefaceTimeout   = 10 * time.Second
	initialWindow    = 65535 // RFC 9113 6.9.2
	defaultPeerFrame = 16384 // RFC 9113 6.5.2
)

// sessionLinger is how long a connection's read loop may go without a
// frame before it waits in a shallow frame (waitReadable) instead of inside
// TLS, and lets go of the framer's read buffer. A variable for tests.
var sessionLinger = 5 * time.Second

// sessionOptions configures a session; zero durations disable the feature.
type sessionOptions struct {
	maxStreams   int
	idleTimeout  time.Duration // close after this long without streams
	pingInterval time.Duration // PING after this long without reading a frame
	pingTimeout  time.Duration
	// onRequest is called by the read loop (server side) for every new
	// stream; it must not block.
	onRequest func(*Stream, *http2.MetaHeadersFrame)
}

// session is one HTTP/2 connection carrying HBONE streams, either end.
type session struct {
	nc     net.Conn
	client bool
	peer   spiffeid.ID
	opts   sessionOptions
	log    *slog.Logger
	fr     *http2.Framer // replaced by the read loop (holding wmu) when it idles
	rd     frameReader   // what fr reads
	start  time.Time
	ctx    context.Context // parent of server streams' contexts; canceled at close
	cancel context.CancelFunc

	// wmu serialises frame writes and header encoding.
	// Lock order: Stream.writeMu, then wmu, then mu.
	wmu         sync.Mutex
	bw          *pooledWriter
	raw         *batchConn // under the TLS layer, if any: flushed after bw
	henc        *hpack.Encoder
	hbuf        bytes.Buffer
	werr        error
	prefaceSent bool

	mu                sync.Mutex
	streams           map[uint32]*Stream
	reserved          int    // client: streams promised to Dial callers
	nextID            uint32 // client: next stream id
	lastPeerID        uint32 // server: highest stream id the peer opened
	sendWindow        int64  // connection-level credit to send
	recvWindow        int64  // connection-level credit the peer holds
	recvUnacked       int64  // consumed, not yet returned by WINDOW_UPDATE
	peerInitialWindow int64
	peerMaxFrame      uint32
	peerMaxStreams    uint32
	goingAway         bool // no new streams
	peerGoAway        bool // the peer sent GOAWAY
	closed            bool
	err               error // why the session closed
	ctrl, ctrlSpare   []ctrlFrame
	idleSince         time.Time
	idleTimer         *time.Timer
	// Keepalive (pingInterval > 0): pingTimer runs pingTick; pingOut says
	// the PING carrying pingData is unanswered.
	pingTimer *time.Timer
	pingSeq   uint64
	pingData  [8]byte
	pingOut   bool

	lastRead atomic.Int64 // time.Since(start) at the last frame read
	// ctrlWriting says a goroutine is writing the control queue (started
	// by queueLocked, gone when the queue is empty: an idle connection has
	// none); finished, set once run stops waiting for writers, stops
	// more from starting. Guarded by mu.
	ctrlWriting, finished bool
	wg                    sync.WaitGroup
}

// newSession prepares a session on nc; raw, if not nil, is the batching
// transport under nc's TLS layer, to be flushed with it. Batching starts
// now: the handshake is over.
func newSession(ctx context.Context, nc net.Conn, raw *batchConn, client bool, peer spiffeid.ID, opts sessionOptions, log *slog.Logger) *session {
	ctx, cancel := context.WithCancel(ctx)
	s := &session{
		ctx:               ctx,
		cancel:            cancel,
		nc:                nc,
		raw:               raw,
		client:            client,
		peer:              peer,
		opts:              opts,
		log:               log,
		start:             time.Now(),
		bw:                &pooledWriter{w: nc},
		streams:           make(map[uint32]*Stream),
		nextID:            1,
		sendWindow:        initialWindow,
		recvWindow:        connWindow,
		peerInitialWindow: initialWindow,
		peerMaxFrame:      defaultPeerFrame,
		peerMaxStreams:    ^uint32(0),
	}
	if raw != nil {
		raw.startBatching()
	}
	s.rd = frameReader{s: s}
	if raw != nil {
		s.rd.raw = idleRaw(raw.Conn)
	}
	s.fr = s.newFramer(hpack.NewDecoder(4096, nil))
	s.henc = hpack.NewEncoder(&s.hbuf)
	s.idleSince = s.start
	return s
}

// newFramer returns a framer on the session's connection, decoding header
// blocks with dec (whose table outlives framers). No read buffer of our
// own: the TLS connection holds a decrypted record, which is where the
// framer reads from; the framer keeps the largest frame it read (64 KiB
// after bulk data) until it is replaced.
func (s *session) newFramer(dec *hpack.Decoder) *http2.Framer {
	fr := http2.NewFramer(s.bw, &s.rd)
	fr.SetReuseFrames()
	fr.SetMaxReadFrameSize(maxReadFrame)
	fr.ReadMetaHeaders = dec
	fr.MaxHeaderListSize = maxHeaderList
	return fr
}

// run speaks HTTP/2 on the connection until it ends, then closes it and
// returns why; see orderly.
func (s *session) run() error {
	// A control writer sends our preface while we read the peer's: a
	// transport without buffering (net.Pipe) must not deadlock.
	s.mu.Lock()
	_ = s.queueLocked(ctrlFrame{typ: http2.FrameSettings}) // the queue is empty: never refused
	s.mu.Unlock()
	err := s.readPreface()
	if err == nil {
		s.mu.Lock()
		if s.opts.pingInterval > 0 && !s.closed {
			s.pingTimer = time.AfterFunc(s.opts.pingInterval, s.pingTick)
		}
		s.armIdleLocked()
		s.mu.Unlock()
		err = s.readLoop()
		for errors.Is(err, errReadIdle) {
			s.idle()
			err = s.readLoop()
		}
	}
	s.close(err)
	s.mu.Lock()
	s.finished = true // a writer started before this is waited for; none after
	s.mu.Unlock()
	s.wg.Wait()
	closeConn(s.nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// readPreface reads the peer's connection preface, which must come
// within prefaceTimeout.
func (s *session) readPreface() error {
	s.setReadDeadline(time.Now().Add(prefaceTimeout))
	defer s.setReadDeadline(time.Time{})
	if !s.client {
		var buf [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(s.nc, buf[:]); err != nil {
			return fmt.Errorf("%w: read client preface: %w", ErrConnClosed, err)
		}
		if string(buf[:]) != http2.ClientPreface {
			return fmt.Errorf("%w: bad client preface %q", errProtocol, buf[:])
		}
	}
	f, err := s.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("%w: read peer settings: %w", ErrConnClosed, err)
	}
	if ga, ok := f.(*http2.GoAwayFrame); ok {
		return fmt.Errorf("%w: peer sent GOAWAY %v %q before SETTINGS", errProtocol, ga.ErrCode, ga.DebugData())
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fmt.Errorf("%w: peer's first frame is %v, not SETTINGS", errProtocol, f.Header().Type)
	}
	return s.handleSettings(sf)
}

var errProtocol = errors.New("hbone: HTTP/2 protocol error")

// errReadIdle ends readLoop when no frame has begun for sessionLinger.
var errReadIdle = errors.New("hbone: no frame for a while")

// frameReader is what the framer reads: the connection, with an idle
// deadline (armed by the read loop between frames) that ends the read
// loop only when it passes between frames. crypto/tls keeps a partial
// record across a timeout, so a deadline is safe at any point of a TLS
// record, but the framer loses the bytes of a partial frame: a deadline
// that passes inside a frame is dropped and the read goes on.
type frameReader struct {
	s        *session
	raw      syscall.RawConn // the TCP socket under TLS; nil: never idles
	boundary bool            // the next read starts a frame
	armed    bool            // the idle deadline is set
	until    time.Duration   // when it passes, since s.start
}

func (r *frameReader) Read(p []byte) (int, error) {
	for {
		n, err := r.s.nc.Read(p)
		if n > 0 || err == nil {
			r.boundary = false
			return n, err
		}
		if !r.armed || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		r.armed = false
		if r.boundary && !r.s.isClosed() {
			return 0, errReadIdle
		}
		// Inside a frame: wait on without the idle deadline (a closed
		// session keeps the deadline that woke it, and fails the next
		// read).
		r.s.setReadDeadline(time.Time{})
	}
}

// frameStart tells the reader that the next read starts a frame, arming
// the idle deadline if it is not armed far enough ahead. Under traffic it
// is re-armed at most every quarter linger.
func (r *frameReader) frameStart() {
	r.boundary = true
	if r.raw == nil {
		return
	}
	now := time.Since(r.s.start)
	if r.armed && r.until-now > sessionLinger*3/4 {
		return
	}
	r.armed, r.until = true, now+sessionLinger
	r.s.setReadDeadline(r.s.start.Add(r.until))
}

// idle runs when no frame has begun for sessionLinger: it replaces the
// framer (dropping its read buffer) and waits for the socket to become
// readable in a shallow frame, so that the collector can shrink the
// goroutine's stack (grown by the TLS handshake) to a few KiB. The idle
// deadline has passed and is cleared; Close sets one that ends the wait.
// Whatever ends it, the read loop then reads (and meets any error).
func (s *session) idle() {
	s.setReadDeadline(time.Time{})
	s.wmu.Lock()
	s.fr = s.newFramer(s.fr.ReadMetaHeaders)
	s.wmu.Unlock()
	waitReadable(s.rd.raw)
}

func (s *session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// closeConn closes c. A TLS connection is closed without close_notify:
// GOAWAY has said goodbye already, and tls.Conn.Close can block for five
// seconds sending close_notify to a peer that does not read. Where the
// transport can half-close, closeConn sends FIN and waits (closeWriteGrace
// at most) for the peer's: closing with data from the peer unread would
// send a reset, which can destroy our GOAWAY before the peer reads it.
func closeConn(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		// Best effort: if the deadline cannot be set the connection is
		// broken and the copy ends at once; either way we close it next.
		_ = c.SetReadDeadline(time.Now().Add(closeWriteGrace))
		_, _ = io.Copy(io.Discard, c)
	}
	c.Close()
}

// setReadDeadline sets the connection's read deadline unless the session
// is closed, which must keep the read loop woken.
func (s *session) setReadDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		// Fails only on a closed connection, which the read loop sees.
		_ = s.nc.SetReadDeadline(t)
	}
}

// pingTick runs on the keepalive timer, instead of a goroutine per
// connection: it PINGs the peer when nothing has been read for
// pingInterval, and closes the session when the PING is still unanswered
// after pingTimeout.
func (s *session) pingTick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.pingOut {
		s.closeLocked(fmt.Errorf("%w: no PING answer within %v", ErrConnClosed, s.opts.pingTimeout))
		return
	}
	interval := s.opts.pingInterval
	if quiet := time.Since(s.start) - time.Duration(s.lastRead.Load()); quiet < interval {
		s.pingTimer.Reset(interval - quiet)
		return
	}
	s.pingSeq++
	for i := range s.pingData {
		s.pingData[i] = byte(s.pingSeq >> (8 * i))
	}
	if err := s.queueLocked(ctrlFrame{typ: http2.FramePing, ping: s.pingData}); err != nil {
		s.closeLocked(fmt.Errorf("%w: %w", errProtocol, err))
		return
	}
	s.pingOut = true
	s.pingTimer.Reset(s.opts.pingTimeout)
}

// pingAcked takes the peer's PING ACK: the answer to ours rearms the
// keepalive.
func (s *session) pingAcked(data [8]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pingOut && data == s.pingData && !s.closed {
		s.pingOut = false
		s.pingTimer.Reset(s.opts.pingInterval)
	}
}

// close ends the session: streams fail with err, the read loop is woken,
// and the write loop writes what is queued (bounded by closeWriteGrace).
func (s *session) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(err)
}

func (s *session) closeLocked(err error) {
	if s.closed {
		return
	}
	if err == nil {
		err = fmt.Errorf("%w: closed by this end", ErrConnClosed)
	}
	s.closed, s.goingAway, s.err = true, true, err
	for _, st := range s.streams {
		s.abortLocked(st, err)
	}
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	if s.pingTimer != nil {
		s.pingTimer.Stop()
	}
	s.cancel()
	now := time.Now()
	// Both fail only on a connection already closed, which is what they
	// are for: waking the read loop and bounding the last writes.
	_ = s.nc.SetReadDeadline(now)
	_ = s.nc.SetWriteDeadline(now.Add(closeWriteGrace))
}

// shutdown stops new streams with GOAWAY and closes the session once the
// open ones are done.
func (s *session) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.goingAway {
		return
	}
	s.goingAway = true
	s.sendGoAwayLocked(http2.ErrCodeNo)
	s.maybeFinishLocked()
}

// goAway closes the session at once, saying goodbye with GOAWAY.
func (s *session) goAway(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goAwayLocked(err)
}

func (s *session) goAwayLocked(err error) {
	if !s.closed {
		s.sendGoAwayLocked(http2.ErrCodeNo)
		s.closeLocked(err)
	}
}

// sendGoAwayLocked queues a GOAWAY; the write loop sends it even if the
// session closes meanwhile.
func (s *session) sendGoAwayLocked(code http2.ErrCode) {
	_ = s.queueLocked(ctrlFrame{typ: http2.FrameGoAway, streamID: s.lastPeerID, code: code}) // GOAWAY is never refused
}

// maybeFinishLocked closes a going-away session that has no streams left.
func (s *session) maybeFinishLocked() {
	if s.goingAway && len(s.streams)+s.reserved == 0 {
		s.closeLocked(errGoingAway)
	}
}

var (
	errGoingAway   = fmt.Errorf("%w: going away", ErrConnClosed)
	errIdleTimeout = fmt.Errorf("%w: idle timeout", ErrConnClosed)
)

// orderly reports whether err ends a session without anything going wrong.
func orderly(err error) bool {
	return err == nil || errors.Is(err, errGoingAway) || errors.Is(err, errIdleTimeout)
}

// armIdleLocked starts the idle clock of a session that has no streams.
func (s *session) armIdleLocked() {
	if s.opts.idleTimeout <= 0 || s.closed {
		return
	}
	s.idleSince = time.Now()
	if s.idleTimer == nil {
		s.idleTimer = time.AfterFunc(s.opts.idleTimeout, s.idleCheck)
	} else {
		s.idleTimer.Reset(s.opts.idleTimeout)
	}
}

// idleCheck closes the session if it has had no streams for idleTimeout.
func (s *session) idleCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.streams)+s.reserved > 0 {
		return
	}
	if left := s.opts.idleTimeout - time.Since(s.idleSince); left > 0 {
		s.idleTimer.Reset(left)
		return
	}
	s.goAwayLocked(errIdleTimeout)
}
