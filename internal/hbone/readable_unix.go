//go:build unix

package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// readPooled reads once from r into a pooled buffer (a big one if big is
// set) and returns it with the count; the caller gives it back with
// putBuffer(bp, big). From a socket it reads inside RawConn.Read, taking
// the buffer only once the socket has something to give and giving it back
// before waiting again: an idle connection holds no buffer, and a read
// costs one system call (no peek first). Deadlines and Close end the wait
// as they end Read. At the end of r it returns io.EOF and no buffer.
func readPooled(r io.Reader, big bool) (*[]byte, int, error) {
	sc, ok := r.(syscall.Conn)
	if !ok || !isSocket(r) {
		return readPlain(r, big)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return readPlain(r, big)
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		bp = getBuffer(big)
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if !errors.Is(rerr, syscall.EINTR) {
				break
			}
		}
		if errors.Is(rerr, syscall.EAGAIN) {
			putBuffer(bp, big)
			bp = nil
			return false // wait for readability without a buffer
		}
		return true
	})
	switch {
	case err != nil: // deadline, closed
	case rerr != nil:
		err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		err = io.EOF
	}
	if err != nil {
		if bp != nil {
			putBuffer(bp, big)
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
