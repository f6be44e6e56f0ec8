package hbone

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// TestDataBufferKeepsOrder writes and consumes random amounts, by read
// and by vectored peek + advance, and checks the bytes come out in order.
func TestDataBufferKeepsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b dataBuffer
	var in, out []byte
	next := byte(0)
	for range 300 {
		switch rng.IntN(3) {
		case 0:
			p := make([]byte, rng.IntN(3*chunkSize))
			for i := range p {
				p[i] = next
				next++
			}
			b.write(p)
			in = append(in, p...)
		case 1:
			p := make([]byte, rng.IntN(2*chunkSize))
			n := b.read(p)
			out = append(out, p[:n]...)
		case 2:
			var all []byte
			for _, v := range b.peekAll(nil) {
				all = append(all, v...)
			}
			if len(all) != b.len() {
				t.Fatalf("peekAll sees %d bytes, len() is %d", len(all), b.len())
			}
			n := rng.IntN(len(all) + 1)
			out = append(out, all[:n]...)
			b.advance(n)
		}
		if len(in)-len(out) != b.len() {
			t.Fatalf("len() = %d, want %d", b.len(), len(in)-len(out))
		}
	}
	if !bytes.Equal(out, in[:len(out)]) {
		t.Fatal("bytes came out of order")
	}
	b.reset()
	if b.len() != 0 || b.chunks != nil {
		t.Fatal("reset left data behind")
	}
}

func TestPooledWriter(t *testing.T) {
	var out bytes.Buffer
	w := &pooledWriter{w: &out}
	small := bytes.Repeat([]byte("a"), 100)
	big := bytes.Repeat([]byte("b"), chunkSize+10)
	w.Write(small)
	if out.Len() != 0 || w.buf == nil {
		t.Fatalf("a small write went out (%d bytes) or holds no buffer", out.Len())
	}
	w.Write(big) // fills the chunk, writes it out, buffers the rest
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.buf != nil {
		t.Error("Flush kept the buffer")
	}
	if want := append(append([]byte{}, small...), big...); !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("wrote %d bytes, want %d in order", out.Len(), len(want))
	}
	out.Reset()
	if n, err := w.Write(big); n != len(big) || err != nil || w.buf != nil || out.Len() != len(big) {
		t.Fatalf("a big write with nothing buffered: %d, %v, buffered %v, out %d", n, err, w.buf != nil, out.Len())
	}
	fail := &pooledWriter{w: errWriter{}}
	fail.Write(small)
	if err := fail.Flush(); err == nil || fail.buf != nil {
		t.Fatalf("Flush to a failing writer: %v, buffer kept %v", err, fail.buf != nil)
	}
	if _, err := fail.Write(small); err == nil {
		t.Error("the error is not sticky")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
