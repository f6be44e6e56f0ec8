package hbone

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
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

// ctrlFrame is a frame the read loop (or another goroutine that must not
// block) wants written: the read loop never writes to the connection
// itself, so that two peers both blocked writing cannot deadlock.
type ctrlFrame struct {
	typ      http2.FrameType
	streamID uint32
	code     http2.ErrCode // RST_STREAM, GOAWAY
	incr     uint32        // WINDOW_UPDATE
	ack      bool          // SETTINGS, PING
	ping     [8]byte
	tableMax uint32 // SETTINGS ack: peer's new HPACK table size, 0 if unchanged
}

// session is one HTTP/2 connection carrying HBONE streams, either end.
type session struct {
	nc     net.Conn
	client bool
	peer   spiffeid.ID
	opts   sessionOptions
	log    *slog.Logger
	fr     *http2.Framer
	start  time.Time
	ctx    context.Context // parent of server streams' contexts; canceled at close
	cancel context.CancelFunc

	// wmu serialises frame writes and header encoding.
	// Lock order: Stream.writeMu, then wmu, then mu.
	wmu         sync.Mutex
	bw          *bufio.Writer
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
	closed            bool
	err               error // why the session closed
	ctrl, ctrlSpare   []ctrlFrame
	idleSince         time.Time
	idleTimer         *time.Timer

	lastRead atomic.Int64 // time.Since(start) at the last frame read
	ctrlWake chan struct{}
	pingAck  chan [8]byte
	done     chan struct{} // closed when the session closes
	wg       sync.WaitGroup
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
		bw:                bufio.NewWriterSize(nc, 16<<10),
		streams:           make(map[uint32]*Stream),
		nextID:            1,
		sendWindow:        initialWindow,
		recvWindow:        connWindow,
		peerInitialWindow: initialWindow,
		peerMaxFrame:      defaultPeerFrame,
		peerMaxStreams:    ^uint32(0),
		ctrlWake:          make(chan struct{}, 1),
		pingAck:           make(chan [8]byte, 1),
		done:              make(chan struct{}),
	}
	if raw != nil {
		raw.startBatching()
	}
	s.fr = http2.NewFramer(s.bw, bufio.NewReaderSize(nc, 16<<10))
	s.fr.SetReuseFrames()
	s.fr.SetMaxReadFrameSize(maxReadFrame)
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.fr.MaxHeaderListSize = maxHeaderList
	s.henc = hpack.NewEncoder(&s.hbuf)
	s.idleSince = s.start
	return s
}

// run speaks HTTP/2 on the connection until it ends, then closes it and
// returns why; see orderly.
func (s *session) run() error {
	// The write loop sends our preface while we read the peer's: a
	// transport without buffering (net.Pipe) must not deadlock.
	s.wg.Add(1)
	go s.writeLoop()
	s.mu.Lock()
	s.queueLocked(ctrlFrame{typ: http2.FrameSettings})
	s.mu.Unlock()
	err := s.readPreface()
	if err == nil {
		if s.opts.pingInterval > 0 {
			s.wg.Add(1)
			go s.keepalive()
		}
		s.mu.Lock()
		s.armIdleLocked()
		s.mu.Unlock()
		err = s.readLoop()
	}
	s.close(err)
	s.wg.Wait()
	closeConn(s.nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// writePrefaceLocked writes our connection preface (RFC 9113 3.4), the
// client magic, SETTINGS and the connection window, unless it is written
// already; s.wmu must be held. Every writer calls it first, so nothing
// can precede the preface.
func (s *session) writePrefaceLocked() error {
	if s.prefaceSent {
		return nil
	}
	s.prefaceSent = true
	if s.client {
		if _, err := s.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	}
	if s.client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(s.opts.maxStreams)})
	}
	if err := s.fr.WriteSettings(settings...); err != nil {
		return err
	}
	return s.fr.WriteWindowUpdate(0, connWindow-initialWindow)
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

// closeConn closes c. A TLS connection is closed without close_notify:
// GOAWAY has said goodbye already, and tls.Conn.Close can block for five
// seconds sending close_notify to a peer that does not read.
func closeConn(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn().Close()
	}
	return c.Close()
}

// setReadDeadline sets the connection's read deadline unless the session
// is closed, which must keep the read loop woken.
func (s *session) setReadDeadline(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.nc.SetReadDeadline(t)
	}
}

// readLoop reads and dispatches frames until the connection fails or the
// session closes.
func (s *session) readLoop() error {
	for {
		f, err := s.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, http2.ErrFrameTooLarge) {
				err = http2.ConnectionError(http2.ErrCodeFrameSize)
			}
			var se http2.StreamError
			if errors.As(err, &se) {
				s.resetStream(se.StreamID, se.Code, fmt.Errorf("%w: %v", errProtocol, se))
				continue
			}
			return s.connError(err)
		}
		s.lastRead.Store(int64(time.Since(s.start)))
		switch f := f.(type) {
		case *http2.DataFrame:
			err = s.handleData(f)
		case *http2.MetaHeadersFrame:
			err = s.handleHeaders(f)
		case *http2.SettingsFrame:
			err = s.handleSettings(f)
		case *http2.WindowUpdateFrame:
			err = s.handleWindowUpdate(f)
		case *http2.PingFrame:
			err = s.handlePing(f)
		case *http2.RSTStreamFrame:
			s.handleReset(f)
		case *http2.GoAwayFrame:
			err = s.handleGoAway(f)
		case *http2.PushPromiseFrame:
			err = http2.ConnectionError(http2.ErrCodeProtocol) // we never enable push
		}
		if err != nil {
			return s.connError(err)
		}
	}
}

// connError turns a read-loop failure into the session's error, telling
// the peer with GOAWAY when the fault is a protocol violation.
func (s *session) connError(err error) error {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		s.mu.Lock()
		s.queueLocked(ctrlFrame{typ: http2.FrameGoAway, streamID: s.lastPeerID, code: http2.ErrCode(ce)})
		s.mu.Unlock()
		if d := s.fr.ErrorDetail(); d != nil {
			return fmt.Errorf("%w: %v: %v", errProtocol, ce, d)
		}
		return fmt.Errorf("%w: %v", errProtocol, ce)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.err // the read failed because this end closed the session
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: peer closed the connection", ErrConnClosed)
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

func (s *session) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var tableMax uint32
	s.mu.Lock()
	defer s.mu.Unlock()
	err := f.ForeachSetting(func(set http2.Setting) error {
		if err := set.Valid(); err != nil {
			return err
		}
		switch set.ID {
		case http2.SettingHeaderTableSize:
			tableMax = max(set.Val, 1) // 0 would read as "unchanged"; 1 is as small
		case http2.SettingInitialWindowSize:
			delta := int64(set.Val) - s.peerInitialWindow
			s.peerInitialWindow = int64(set.Val)
			for _, st := range s.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				wake(st.writeWake)
			}
		case http2.SettingMaxFrameSize:
			s.peerMaxFrame = set.Val
		case http2.SettingMaxConcurrentStreams:
			s.peerMaxStreams = set.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.queueLocked(ctrlFrame{typ: http2.FrameSettings, ack: true, tableMax: tableMax})
}

func (s *session) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.StreamID == 0 {
		s.sendWindow += int64(f.Increment)
		if s.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, st := range s.streams {
			wake(st.writeWake)
		}
		return nil
	}
	st := s.streams[f.StreamID]
	if st == nil {
		return s.checkKnownLocked(f.StreamID)
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > 1<<31-1 {
		s.resetLocked(st, http2.ErrCodeFlowControl, fmt.Errorf("%w: send window overflow", errProtocol))
		return nil
	}
	wake(st.writeWake)
	return nil
}

func (s *session) handlePing(f *http2.PingFrame) error {
	if f.IsAck() {
		select {
		case s.pingAck <- f.Data:
		default:
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueLocked(ctrlFrame{typ: http2.FramePing, ack: true, ping: f.Data})
}

func (s *session) handleReset(f *http2.RSTStreamFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[f.StreamID]; st != nil {
		s.abortLocked(st, resetError{code: f.ErrCode})
	}
}

func (s *session) handleGoAway(f *http2.GoAwayFrame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goingAway = true
	for id, st := range s.streams {
		if s.client && id > f.LastStreamID {
			s.abortLocked(st, fmt.Errorf("%w: server going away", errRefused))
		}
	}
	if f.ErrCode != http2.ErrCodeNo {
		return fmt.Errorf("%w: peer sent GOAWAY %v %q", errProtocol, f.ErrCode, f.DebugData())
	}
	s.maybeFinishLocked()
	return nil
}

// checkKnownLocked accepts frames for streams that existed and are gone
// (they may cross our RST_STREAM), and refuses frames for streams that
// were never opened (RFC 9113 5.1, "idle").
func (s *session) checkKnownLocked(id uint32) error {
	known := id <= s.lastPeerID
	if s.client {
		known = id < s.nextID
	}
	if id%2 == 1 && known {
		return nil
	}
	return http2.ConnectionError(http2.ErrCodeProtocol)
}

func (s *session) handleData(f *http2.DataFrame) error {
	n := int64(f.Length) // flow control counts padding too
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > s.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s.recvWindow -= n
	st := s.streams[f.StreamID]
	if st == nil || st.recvEnd || st.recvErr != nil || (s.client && st.status == 0) {
		s.creditLocked(nil, n) // nobody will read it: hand the credit back
		if st == nil {
			return s.checkKnownLocked(f.StreamID)
		}
		s.resetLocked(st, http2.ErrCodeStreamClosed, fmt.Errorf("%w: DATA on a stream not open for it", errProtocol))
		return nil
	}
	if n > st.recvWindow {
		s.creditLocked(nil, n)
		s.resetLocked(st, http2.ErrCodeFlowControl, fmt.Errorf("%w: peer overran the stream window", errProtocol))
		return nil
	}
	st.recvWindow -= n
	data := f.Data()
	if st.closed {
		s.creditLocked(st, n) // closed locally: discard
	} else {
		st.buf.write(data)
		if pad := n - int64(len(data)); pad > 0 {
			s.creditLocked(st, pad)
		}
	}
	if f.StreamEnded() {
		st.recvEnd = true
		s.maybeRemoveLocked(st)
	}
	wake(st.readWake)
	return nil
}

func (s *session) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		return s.responseHeadersLocked(st, f)
	}
	if s.client || id%2 == 0 {
		return s.checkKnownLocked(id)
	}
	if id <= s.lastPeerID {
		return http2.ConnectionError(http2.ErrCodeStreamClosed) // RFC 9113 5.1.1
	}
	s.lastPeerID = id
	if s.goingAway || s.closed || len(s.streams) >= s.opts.maxStreams {
		return s.queueLocked(ctrlFrame{typ: http2.FrameRSTStream, streamID: id, code: http2.ErrCodeRefusedStream})
	}
	st := s.newStreamLocked(id)
	if f.StreamEnded() {
		st.recvEnd = true
	}
	s.opts.onRequest(st, f)
	return nil
}

// responseHeadersLocked handles HEADERS on an open stream: the response on
// the client side, or trailers, which end the stream, on either side.
func (s *session) responseHeadersLocked(st *Stream, f *http2.MetaHeadersFrame) error {
	switch {
	case st.recvEnd || st.recvErr != nil:
		s.resetLocked(st, http2.ErrCodeStreamClosed, fmt.Errorf("%w: HEADERS after END_STREAM", errProtocol))
		return nil
	case s.client && st.status == 0:
		code, err := parseStatus(f.PseudoValue("status"))
		if err != nil {
			s.resetLocked(st, http2.ErrCodeProtocol, err)
			return nil
		}
		if code < 200 {
			return nil // informational: the final answer follows
		}
		st.status = code
		close(st.resp)
	case !f.StreamEnded():
		s.resetLocked(st, http2.ErrCodeProtocol, fmt.Errorf("%w: trailers without END_STREAM", errProtocol))
		return nil
	}
	if f.StreamEnded() {
		st.recvEnd = true
		s.maybeRemoveLocked(st)
		wake(st.readWake)
	}
	return nil
}

// queueLocked queues a control frame for the write loop. Replies the peer
// can provoke at will (PING and SETTINGS acks, resets) are bounded: a peer
// that sends them faster than it reads is refused.
func (s *session) queueLocked(f ctrlFrame) error {
	if s.closed && f.typ != http2.FrameGoAway {
		return nil
	}
	if len(s.ctrl) >= maxQueuedControl && f.typ != http2.FrameWindowUpdate && f.typ != http2.FrameGoAway {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	s.ctrl = append(s.ctrl, f)
	wake(s.ctrlWake)
	return nil
}

// writeLoop writes queued control frames. At close it writes what is left
// (a GOAWAY, usually) and exits.
func (s *session) writeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctrlWake:
			s.flushControl()
		case <-s.done:
			s.flushControl()
			return
		}
	}
}

func (s *session) flushControl() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	q := s.ctrl
	s.ctrl, s.ctrlSpare = s.ctrlSpare[:0], q
	s.mu.Unlock()
	if len(q) == 0 || s.werr != nil {
		return
	}
	err := s.writePrefaceLocked()
	for _, f := range q {
		if err != nil {
			break
		}
		switch f.typ {
		case http2.FrameSettings:
			if !f.ack {
				continue // our preface, written above
			}
			if f.tableMax != 0 {
				s.henc.SetMaxDynamicTableSizeLimit(f.tableMax)
			}
			err = s.fr.WriteSettingsAck()
		case http2.FramePing:
			err = s.fr.WritePing(f.ack, f.ping)
		case http2.FrameWindowUpdate:
			err = s.fr.WriteWindowUpdate(f.streamID, f.incr)
		case http2.FrameRSTStream:
			err = s.fr.WriteRSTStream(f.streamID, f.code)
		case http2.FrameGoAway:
			err = s.fr.WriteGoAway(f.streamID, f.code, nil)
		}
	}
	if err == nil {
		err = s.flushLocked()
	}
	s.writeFailedLocked(err)
}

// flushLocked writes out everything buffered; s.wmu must be held.
func (s *session) flushLocked() error {
	err := s.bw.Flush()
	if err == nil && s.raw != nil {
		err = s.raw.Flush()
	}
	return err
}

// writeFailedLocked records a write error, which ends the session; s.wmu
// must be held.
func (s *session) writeFailedLocked(err error) error {
	if err == nil {
		return nil
	}
	if s.werr == nil {
		s.werr = fmt.Errorf("%w: write: %w", ErrConnClosed, err)
		s.close(s.werr)
	}
	return s.werr
}

// writeData writes one DATA frame and flushes it.
func (s *session) writeData(id uint32, end bool, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return s.werr
	}
	err := s.writePrefaceLocked()
	if err == nil {
		err = s.fr.WriteData(id, end, p)
	}
	if err == nil {
		err = s.flushLocked()
	}
	return s.writeFailedLocked(err)
}

// writeHeadersLocked encodes and writes a header block; s.wmu must be held.
func (s *session) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField) error {
	if s.werr != nil {
		return s.werr
	}
	s.hbuf.Reset()
	for _, f := range fields {
		s.henc.WriteField(f)
	}
	s.mu.Lock()
	frame := int(s.peerMaxFrame)
	s.mu.Unlock()
	block := s.hbuf.Bytes()
	first := block[:min(len(block), frame)]
	block = block[len(first):]
	err := s.writePrefaceLocked()
	if err == nil {
		err = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	}
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), frame)]
		block = block[len(frag):]
		err = s.fr.WriteContinuation(id, len(block) == 0, frag)
	}
	if err == nil {
		err = s.flushLocked()
	}
	return s.writeFailedLocked(err)
}

// keepalive PINGs the peer when nothing has been read for pingInterval and
// closes the session when the answer does not come within pingTimeout.
func (s *session) keepalive() {
	defer s.wg.Done()
	interval := s.opts.pingInterval
	t := time.NewTimer(interval)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if quiet := time.Since(s.start) - time.Duration(s.lastRead.Load()); quiet < interval {
			t.Reset(interval - quiet)
			continue
		}
		seq++
		var data [8]byte
		for i := range data {
			data[i] = byte(seq >> (8 * i))
		}
		s.mu.Lock()
		err := s.queueLocked(ctrlFrame{typ: http2.FramePing, ping: data})
		s.mu.Unlock()
		if err != nil {
			s.close(fmt.Errorf("%w: %w", errProtocol, err))
			return
		}
		timeout := time.NewTimer(s.opts.pingTimeout)
	wait:
		for {
			select {
			case <-s.done:
				timeout.Stop()
				return
			case got := <-s.pingAck:
				if got == data {
					break wait
				}
			case <-timeout.C:
				s.close(fmt.Errorf("%w: no PING answer within %v", ErrConnClosed, s.opts.pingTimeout))
				return
			}
		}
		timeout.Stop()
		t.Reset(interval)
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
	close(s.done)
	s.cancel()
	now := time.Now()
	s.nc.SetReadDeadline(now) // wakes the read loop
	s.nc.SetWriteDeadline(now.Add(closeWriteGrace))
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
	s.queueLocked(ctrlFrame{typ: http2.FrameGoAway, streamID: s.lastPeerID, code: http2.ErrCodeNo})
	s.maybeFinishLocked()
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
