package hbone

import (
	"bytes"
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
