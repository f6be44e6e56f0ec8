package hbone

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/net/http2"
)

// readLoop reads and dispatches frames until the connection fails or the
// session closes.
func (s *session) readLoop() error {
	for {
		s.rd.frameStart()
		f, err := s.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, errReadIdle) {
				return err
			}
			if errors.Is(err, http2.ErrFrameTooLarge) {
				err = http2.ConnectionError(http2.ErrCodeFrameSize)
			}
			var se http2.StreamError
			if errors.As(err, &se) {
				s.resetStream(se.StreamID, se.Code, fmt.Errorf("%w: %w", errProtocol, se))
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
		s.sendGoAwayLocked(http2.ErrCode(ce))
		s.mu.Unlock()
		if d := s.fr.ErrorDetail(); d != nil {
			return fmt.Errorf("%w: %w: %w", errProtocol, ce, d)
		}
		return fmt.Errorf("%w: %w", errProtocol, ce)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return s.err // the read failed because this end closed the session
	case s.peerGoAway:
		return errGoingAway // it said goodbye first: EOF or reset are its close
	case errors.Is(err, io.EOF):
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
				st.wakeWriterLocked()
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
			st.wakeWriterLocked()
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
	st.wakeWriterLocked()
	return nil
}

func (s *session) handlePing(f *http2.PingFrame) error {
	if f.IsAck() {
		s.pingAcked(f.Data)
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
	s.goingAway, s.peerGoAway = true, true
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
	if st == nil || st.recvDoneLocked() || (s.client && st.status == 0) {
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
		if pad := n - int64(len(data)); pad > 0 {
			s.creditLocked(st, pad)
		}
		if k := st.writeInlineLocked(data); k > 0 {
			s.creditLocked(st, int64(k))
			data = data[k:]
		}
		st.buf.write(data)
	}
	if f.StreamEnded() {
		st.recvEnd = true
		s.maybeRemoveLocked(st)
	}
	if len(data) > 0 || f.StreamEnded() || st.closed {
		st.wakeReaderLocked()
	}
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
	case st.recvDoneLocked():
		s.resetLocked(st, http2.ErrCodeStreamClosed, fmt.Errorf("%w: HEADERS after END_STREAM", errProtocol))
		return nil
	case s.client && st.status == 0:
		code, ok := s.statusLocked(st, f)
		if !ok || code < 200 {
			return nil // reset, or informational: the final answer follows
		}
		st.status = int32(code)
		close(st.resp)
		st.resp = nil
	case !f.StreamEnded():
		s.resetLocked(st, http2.ErrCodeProtocol, fmt.Errorf("%w: trailers without END_STREAM", errProtocol))
		return nil
	}
	if f.StreamEnded() {
		st.recvEnd = true
		s.maybeRemoveLocked(st)
		st.wakeReaderLocked()
	}
	return nil
}

// statusLocked reads a response's :status, resetting the stream (not the
// connection, which carries on) when it is malformed.
func (s *session) statusLocked(st *Stream, f *http2.MetaHeadersFrame) (int, bool) {
	code, err := parseStatus(f.PseudoValue("status"))
	if err != nil {
		s.resetLocked(st, http2.ErrCodeProtocol, err)
		return 0, false
	}
	return code, true
}

// parseStatus parses a response :status.
func parseStatus(v string) (int, error) {
	code, err := strconv.Atoi(v)
	if err != nil || len(v) != 3 || code < 100 {
		return 0, fmt.Errorf("%w: bad :status %q", errProtocol, v)
	}
	return code, nil
}
