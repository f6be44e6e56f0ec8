package hbone

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Relay copies between a and b in both directions until both directions
// have ended, then closes both. When one side finishes sending (io.EOF),
// Relay half-closes the other with CloseWrite if it has one, so half-close
// propagates end to end; when a copy fails, both sides are closed at once,
// which ends the other copy too. It returns the bytes copied each way and
// the first error (nil when both directions ended cleanly).
//
// Copies take the cheapest path available: splice(2) between two kernel
// sockets, straight out of a Stream's receive buffers, or through a pooled
// buffer.
func Relay(a, b io.ReadWriteCloser) (aToB, bToA int64, err error) {
	var (
		once  sync.Once
		first error
	)
	fail := func(err error) {
		once.Do(func() {
			first = err
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if aToB, err = relayHalf(b, a); err != nil {
			fail(err)
		}
	}()
	if bToA, err = relayHalf(a, b); err != nil {
		fail(err)
	}
	<-done
	fail(nil) // closes both if nothing failed
	return aToB, bToA, first
}

// relayHalf copies src to dst and half-closes dst at the end of src.
func relayHalf(dst io.Writer, src io.Reader) (int64, error) {
	n, err := copyFast(dst, src)
	if err != nil {
		return n, err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return n, err
		}
	}
	return n, nil
}

// copyFast is io.Copy choosing the path that copies least.
func copyFast(dst io.Writer, src io.Reader) (int64, error) {
	if isSocket(dst) && isSocket(src) {
		return io.Copy(dst, src) // net.TCPConn.ReadFrom splices
	}
	if st, ok := src.(*Stream); ok {
		return st.WriteTo(dst)
	}
	if st, ok := dst.(*Stream); ok {
		return st.ReadFrom(src)
	}
	bp := getChunk()
	defer putChunk(bp)
	// Hide ReaderFrom/WriterTo: their generic fallbacks allocate a buffer.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}

func isSocket(v any) bool {
	switch v.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}
