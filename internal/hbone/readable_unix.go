//go:build unix

package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// pooledReader reads r once per read into a pooled buffer (a big one if
// big is set); the caller gives it back with putBuffer(bp, big). From a
// socket it reads inside RawConn.Read, taking the buffer only once the
// socket has something to give and giving it back before waiting again: an
// idle connection holds no buffer, and a read costs one system call (no
// peek first). Deadlines and Close end the wait as they end Read. At the
// end of r it returns io.EOF and no buffer. One is made per copy: the
// callback and its results live in it, not in a closure per read.
type pooledReader struct {
	r   io.Reader
	rc  syscall.RawConn // nil unless r is a socket
	big bool
	fn  func(fd uintptr) bool // rc.Read's callback: readFD, bound once

	// readFD's results.
	bp   *[]byte
	n    int
	rerr error
}

func newPooledReader(r io.Reader) *pooledReader {
	pr := &pooledReader{r: r, rc: socketRaw(r)}
	if pr.rc != nil {
		pr.fn = pr.readFD
	}
	return pr
}

func (pr *pooledReader) readFD(fd uintptr) bool {
	pr.bp = getBuffer(pr.big)
	for {
		pr.n, pr.rerr = syscall.Read(int(fd), *pr.bp)
		if !errors.Is(pr.rerr, syscall.EINTR) {
			break
		}
	}
	if errors.Is(pr.rerr, syscall.EAGAIN) {
		putBuffer(pr.bp, pr.big)
		pr.bp = nil
		return false // wait for readability without a buffer
	}
	return true
}

func (pr *pooledReader) read() (*[]byte, int, error) {
	if pr.rc == nil {
		return readPlain(pr.r, pr.big)
	}
	pr.bp, pr.n, pr.rerr = nil, 0, nil
	err := pr.rc.Read(pr.fn)
	bp, n := pr.bp, pr.n
	pr.bp = nil
	switch {
	case err != nil: // deadline, closed
	case pr.rerr != nil:
		err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", pr.rerr)}
	case n == 0:
		err = io.EOF
	}
	if err != nil {
		if bp != nil {
			putBuffer(bp, pr.big)
		}
		return nil, 0, err
	}
	return bp, n, nil
}

// writeNow writes as much of data to the socket as it takes without
// blocking and returns how much that was. An error (the socket closed or
// broken) stops it; whoever writes the rest meets the error.
func writeNow(raw syscall.RawConn, data []byte) int {
	n := 0
	_ = raw.Write(func(fd uintptr) bool {
		for n < len(data) {
			m, err := syscall.Write(int(fd), data[n:])
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // never wait
	})
	return n
}

// idleRaw returns c's RawConn if c is a socket a session's read loop can
// wait on when idle (waitReadable), else nil.
func idleRaw(c net.Conn) syscall.RawConn { return socketRaw(c) }

// waitReadable waits until raw's socket has something to read (data, EOF,
// an error) or the wait fails (a deadline, a close), reading nothing. The
// runtime's readiness flag is reset as the wait starts, so the socket
// itself says first whether anything came before.
func waitReadable(raw syscall.RawConn) {
	_ = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if !errors.Is(err, syscall.EINTR) {
				return !errors.Is(err, syscall.EAGAIN)
			}
		}
	})
}
