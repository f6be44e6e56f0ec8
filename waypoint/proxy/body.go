package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

var (
	errStaleBody     = errors.New("request body belongs to a newer attempt")
	errNotReplayable = errors.New("request body too large to replay")
)

// replayBody lets a request body be sent again on retry without buffering
// it whole: it keeps the first limit bytes read; while the body fits, any
// attempt can start over. Only the newest attempt may read; an older one,
// still running in its transport, gets errStaleBody, but bytes it pulled
// from the client are kept for the newer.
type replayBody struct {
	src   io.ReadCloser
	limit int

	readMu sync.Mutex // serializes src.Read

	mu       sync.Mutex
	buf      []byte
	read     int // bytes read from src
	overflow bool
	eof      bool
	err      error
	gen      int
}

func newReplayBody(src io.ReadCloser, limit int) *replayBody {
	return &replayBody{src: src, limit: limit}
}

// attempt returns the body of a new attempt, reading from the start. Once
// the body is read whole and kept, that is the kept bytes themselves, in a
// reader net/http knows to be in memory: it then writes a small body with
// the request's headers (one write upstream, not two). Else a reader that
// streams from the client as the attempt reads.
func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	if b.eof && !b.overflow {
		return io.NopCloser(bytes.NewReader(b.buf))
	}
	return &replayReader{b: b, gen: b.gen}
}

// readAhead reads once from the client a body of the given length, which
// must fit the limit, before the first attempt: what the client sent with
// its headers (all of a small body, usually) is then kept, and if that is
// the whole body the attempt sends it from memory. It waits only for the
// first bytes of the body, as the first attempt would. Call it before any
// attempt.
func (b *replayBody) readAhead(length int) {
	b.buf = make([]byte, length)
	n, err := b.src.Read(b.buf)
	if n == length && err == nil {
		// The length is reached: a body says io.EOF at once.
		var probe [1]byte
		var m int
		m, err = b.src.Read(probe[:])
		if m > 0 { // longer than declared: net/http does not let this happen
			err = errors.New("request body longer than its Content-Length")
		}
	}
	b.buf, b.read = b.buf[:n], n
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
	case err != nil:
		b.err = err
	}
}

// replayable reports whether a new attempt could resend the body.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

// complete returns the whole body if it was read to the end and kept.
func (b *replayBody) complete() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.eof && !b.overflow
}

type replayReader struct {
	b   *replayBody
	gen int
	pos int
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	for {
		b.mu.Lock()
		switch {
		case r.gen != b.gen:
			b.mu.Unlock()
			return 0, errStaleBody
		case r.pos < len(b.buf):
			n := copy(p, b.buf[r.pos:])
			r.pos += n
			b.mu.Unlock()
			return n, nil
		case r.pos < b.read:
			b.mu.Unlock()
			return 0, errNotReplayable
		case b.eof:
			b.mu.Unlock()
			return 0, io.EOF
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		b.mu.Unlock()

		b.readMu.Lock()
		b.mu.Lock()
		behind := r.pos < b.read // another reader got there first
		b.mu.Unlock()
		if behind {
			b.readMu.Unlock()
			continue
		}
		n, err := b.src.Read(p)
		b.mu.Lock()
		if !b.overflow {
			if len(b.buf)+n <= b.limit {
				b.buf = append(b.buf, p[:n]...)
			} else {
				b.overflow, b.buf = true, nil
			}
		}
		b.read += n
		switch {
		case errors.Is(err, io.EOF):
			b.eof = true
		case err != nil:
			b.err = err
		}
		stale := r.gen != b.gen
		b.mu.Unlock()
		b.readMu.Unlock()
		if stale {
			return 0, errStaleBody
		}
		r.pos += n
		return n, err
	}
}

// Close does not close the client's body: a retry may still need it. The
// server closes it when the handler returns.
func (r *replayReader) Close() error { return nil }

// countingBody counts the request body bytes read, and tells the idle guard.
type countingBody struct {
	io.ReadCloser
	n    atomic.Int64
	eof  atomic.Bool
	idle *idleGuard
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.n.Add(int64(n))
		c.idle.progress()
	}
	if errors.Is(err, io.EOF) {
		c.eof.Store(true)
	}
	return n, err
}

// recorder notes the status and size of the response, and tells the idle guard.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	idle   *idleGuard
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	if n > 0 {
		w.idle.progress()
	}
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush flushes; ReverseProxy flushes streaming responses through it.
func (w *recorder) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}
