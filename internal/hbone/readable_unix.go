//go:build unix

package hbone

import (
	"errors"
	"io"
	"syscall"
)

// waitReadable blocks until r, if it is a socket, has data, EOF or an error to
// report, without holding a buffer: an idle tunneled connection then costs no
// copy buffer. Errors are left to the Read that follows (deadlines included:
// the wait honours them).
func waitReadable(r io.Reader) {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN)
	})
}
