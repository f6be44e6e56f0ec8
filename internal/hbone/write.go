package hbone

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

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

// queueLocked queues a control frame and starts a goroutine writing the
// queue if none is. Replies the peer can provoke at will (PING and
// SETTINGS acks, resets) are bounded: a peer that sends them faster than
// it reads is refused.
func (s *session) queueLocked(f ctrlFrame) error {
	if s.closed && f.typ != http2.FrameGoAway {
		return nil
	}
	if len(s.ctrl) >= maxQueuedControl && f.typ != http2.FrameWindowUpdate && f.typ != http2.FrameGoAway {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	s.ctrl = append(s.ctrl, f)
	if !s.ctrlWriting && !s.finished {
		s.ctrlWriting = true
		s.wg.Add(1)
		go s.writeControl()
	}
	return nil
}

// writeControl writes the queued control frames until the queue is empty,
// then exits: control frames are written by a goroutine of their own, so
// that the read loop, which queues most of them (acks, WINDOW_UPDATEs),
// never blocks on a peer that does not read, and an idle connection keeps
// no goroutine for them. At close it writes what is left (a GOAWAY,
// usually) within the close's write deadline.
func (s *session) writeControl() {
	defer s.wg.Done()
	for {
		s.flushControl()
		s.mu.Lock()
		if len(s.ctrl) == 0 {
			s.ctrlWriting = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
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
	_ = s.writeFailedLocked(err) // recorded in s.werr, which closes the session
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

// writeData writes one DATA frame, and flushes unless told that more
// follows at once: the frames of one Stream.Write leave in one batch.
func (s *session) writeData(id uint32, end bool, p []byte, flush bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return s.werr
	}
	err := s.writePrefaceLocked()
	if err == nil {
		err = s.writeDataFrameLocked(id, end, p)
	}
	if err == nil && flush {
		err = s.flushLocked()
	}
	return s.writeFailedLocked(err)
}

// writeDataFrameLocked writes a DATA frame's header, then its payload, to
// the buffered writer; s.wmu must be held. Unlike http2.Framer.WriteData,
// which first copies the whole frame into a buffer of its own, a payload
// larger than the buffered writer's free space goes to the TLS layer
// without a copy. p must fit the peer's frame size and id must be a client
// stream id: the callers guarantee both.
func (s *session) writeDataFrameLocked(id uint32, end bool, p []byte) error {
	var hdr [frameHeaderLen]byte
	hdr[0], hdr[1], hdr[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	hdr[3] = byte(http2.FrameData)
	if end {
		hdr[4] = byte(http2.FlagDataEndStream)
	}
	binary.BigEndian.PutUint32(hdr[5:], id&(1<<31-1))
	if _, err := s.bw.Write(hdr[:]); err != nil {
		return err
	}
	_, err := s.bw.Write(p)
	return err
}

// frameHeaderLen is the size of an HTTP/2 frame header (RFC 9113 4.1).
const frameHeaderLen = 9

// flush writes out what writeData left buffered.
func (s *session) flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return s.werr
	}
	return s.writeFailedLocked(s.flushLocked())
}

// writeHeadersLocked encodes and writes a header block; s.wmu must be held.
func (s *session) writeHeadersLocked(id uint32, end bool, fields []hpack.HeaderField) error {
	if s.werr != nil {
		return s.werr
	}
	s.hbuf.Reset()
	for _, f := range fields {
		if err := s.henc.WriteField(f); err != nil { // into a bytes.Buffer: never fails
			return fmt.Errorf("hbone: encode header %s: %w", f.Name, err)
		}
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
