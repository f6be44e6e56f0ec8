package hbone

import (
	"io"
	"sync"
	"time"
)

// chunkSize is the unit of received-data buffering and of copy buffers. It
// holds two TLS records, so one chunk usually becomes one write downstream.
const chunkSize = 32 << 10

// chunkPool recycles buffers so that a busy tunnel does not allocate per
// frame or per copy.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

func getChunk() *[]byte  { return chunkPool.Get().(*[]byte) }
func putChunk(b *[]byte) { chunkPool.Put(b) }

// bigSize is the read size while a copy moves data in bulk (its last read
// filled a chunk): fewer, larger reads, DATA frames and TLS writes cut the
// CPU per byte by about a tenth in the ztunnel benchmark.
const bigSize = 256 << 10

var bigPool = sync.Pool{New: func() any { b := make([]byte, bigSize); return &b }}

// getBuffer returns a pooled copy buffer, a big one if big is set.
func getBuffer(big bool) *[]byte {
	if big {
		return bigPool.Get().(*[]byte)
	}
	return getChunk()
}

// putBuffer gives back what getBuffer(big) returned.
func putBuffer(b *[]byte, big bool) {
	if big {
		bigPool.Put(b)
		return
	}
	putChunk(b)
}

// readPlain reads once from r into a pooled buffer, held while Read
// waits; pooledReader's fallback.
func readPlain(r io.Reader, big bool) (*[]byte, int, error) {
	bp := getBuffer(big)
	n, err := r.Read(*bp)
	if n <= 0 {
		putBuffer(bp, big)
		return nil, 0, err
	}
	return bp, n, err
}

// dataBuffer is a FIFO of bytes in pooled chunks: what a stream received
// and its reader has not consumed yet.
type dataBuffer struct {
	chunks []*[]byte
	r      int // read offset in chunks[0]
	w      int // write offset in the last chunk
	size   int
}

func (b *dataBuffer) len() int { return b.size }

// write appends a copy of p.
func (b *dataBuffer) write(p []byte) {
	b.size += len(p)
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.w == chunkSize {
			b.chunks = append(b.chunks, getChunk())
			b.w = 0
		}
		n := copy((*b.chunks[len(b.chunks)-1])[b.w:], p)
		b.w += n
		p = p[n:]
	}
}

// peek returns the unread bytes of the first chunk, without copying. The
// slice stays valid until the next advance or reset: write only appends
// after it.
func (b *dataBuffer) peek() []byte {
	if b.size == 0 {
		return nil
	}
	end := chunkSize
	if len(b.chunks) == 1 {
		end = b.w
	}
	return (*b.chunks[0])[b.r:end]
}

// peekAll appends to dst the unread bytes of every chunk, without
// copying, for a vectored write. Like peek's, the slices stay valid until
// the next advance or reset.
func (b *dataBuffer) peekAll(dst [][]byte) [][]byte {
	for i, c := range b.chunks {
		start, end := 0, chunkSize
		if i == 0 {
			start = b.r
		}
		if i == len(b.chunks)-1 {
			end = b.w
		}
		dst = append(dst, (*c)[start:end])
	}
	return dst
}

// advance consumes n bytes, which must not exceed len().
func (b *dataBuffer) advance(n int) {
	b.size -= n
	for n > 0 || (len(b.chunks) > 0 && b.size == 0) {
		end := chunkSize
		if len(b.chunks) == 1 {
			end = b.w
		}
		k := min(n, end-b.r)
		b.r += k
		n -= k
		if b.r < end {
			break
		}
		putChunk(b.chunks[0])
		b.chunks[0] = nil
		b.chunks = b.chunks[1:]
		b.r = 0
	}
	if len(b.chunks) == 0 {
		b.chunks = nil
		b.w = 0
	}
}

// read moves up to len(p) bytes into p.
func (b *dataBuffer) read(p []byte) int {
	n := 0
	for n < len(p) && b.size > 0 {
		k := copy(p[n:], b.peek())
		b.advance(k)
		n += k
	}
	return n
}

// reset drops everything, returning the chunks to the pool.
func (b *dataBuffer) reset() int {
	n := b.size
	for _, c := range b.chunks {
		putChunk(c)
	}
	*b = dataBuffer{}
	return n
}

// deadline is a settable deadline whose expiry closes a channel, so that it
// can sit in a select next to other events. It is net.Pipe's pipeDeadline,
// except that the channel is made when the deadline is first set: most
// streams never have one, and a nil channel is never ready. A waiter that
// took the nil channel must be woken otherwise when a deadline is set
// (Stream.wakeWaiters).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes; nil until set
}

// set arms the deadline; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to have closed cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = nil
		}
		return
	}
	if d.cancel == nil || closed {
		d.cancel = make(chan struct{})
	}
	if dur := time.Until(t); dur > 0 {
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	close(d.cancel)
}

// wait returns a channel closed when the deadline has passed.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// wake signals a capacity-one channel without blocking.
func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pooledWriter is a bufio.Writer whose buffer, a pooled chunk, is taken at
// the first write after a flush and given back by the flush: an idle
// session (a pooled HBONE connection, 100 tunnels each) holds no write
// buffer. Like bufio.Writer, a write at least a chunk long with nothing
// buffered goes straight through, and an error is sticky. Not safe for
// concurrent use (the session's wmu serializes writers). A chunk is 32 KiB:
// two full TLS records per write.
type pooledWriter struct {
	w   io.Writer
	buf *[]byte // nil while nothing is buffered
	n   int
	err error
}

func (b *pooledWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if b.err != nil {
			return total, b.err
		}
		if b.n == 0 && len(p) >= chunkSize {
			return total + b.write(p), b.err
		}
		if b.buf == nil {
			b.buf = getChunk()
		}
		k := copy((*b.buf)[b.n:], p)
		b.n += k
		total += k
		p = p[k:]
		if b.n == chunkSize {
			b.writeOut()
		}
	}
	return total, b.err
}

func (b *pooledWriter) WriteString(s string) (int, error) {
	return b.Write([]byte(s)) // only the client preface: once per connection
}

// Flush writes out what is buffered and gives the buffer back.
func (b *pooledWriter) Flush() error {
	if b.buf != nil && b.err == nil {
		b.writeOut()
	}
	if b.buf != nil {
		putChunk(b.buf)
		b.buf, b.n = nil, 0
	}
	return b.err
}

// writeOut writes the buffer's contents, keeping the buffer.
func (b *pooledWriter) writeOut() {
	if b.n == 0 {
		return
	}
	b.write((*b.buf)[:b.n])
	b.n = 0
}

// write writes p through, recording the error (a short write is one), and
// returns how much was written.
func (b *pooledWriter) write(p []byte) int {
	n, err := b.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	b.err = err
	return n
}
