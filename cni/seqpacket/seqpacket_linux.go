// Package seqpacket carries datagrams with an optional file descriptor over
// SOCK_SEQPACKET unix sockets, the transport of both node-agent sockets (the CNI
// plugin's and ztunnel's): message boundaries are kept by the kernel and a network
// namespace travels as SCM_RIGHTS.
package seqpacket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// MaxMessage bounds one datagram; larger ones are rejected as truncated.
const MaxMessage = 64 << 10

// ErrTruncated reports a datagram or its ancillary data larger than the buffer.
var ErrTruncated = errors.New("message truncated")

// Listen serves a SOCK_SEQPACKET socket at path, replacing a stale socket file left by
// a previous process; the socket is accessible to root only.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// Dial connects to the SOCK_SEQPACKET socket at path.
func Dial(path string, timeout time.Duration) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return c.(*net.UnixConn), nil
}

// Send writes one datagram, with fd as SCM_RIGHTS if it is non-nil.
func Send(c *net.UnixConn, b []byte, fd *os.File) error {
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("send: short write (%d of %d bytes)", n, len(b))
	}
	return nil
}

// Recv reads one datagram and the file descriptors that came with it, as files the
// caller must close.
func Recv(c *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	fds, perr := ParseRights(oob[:oobn])
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "received-fd")
	}
	if perr == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		perr = ErrTruncated
	}
	if perr != nil {
		CloseAll(files)
		return nil, nil, perr
	}
	if n == 0 {
		// A zero-length datagram is how a SEQPACKET peer's close reads.
		CloseAll(files)
		return nil, nil, net.ErrClosed
	}
	return buf[:n], files, nil
}

// ParseRights extracts the descriptors of SCM_RIGHTS messages in oob.
func ParseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		// x/sys indexes past the end of data that is not whole descriptors.
		if len(m.Data)%4 != 0 {
			return fds, errors.New("SCM_RIGHTS: partial descriptor")
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// CloseAll closes every file.
func CloseAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// Serve accepts connections on ln until ctx ends, running handle for each on its own
// goroutine, and returns once ln is closed and every handler has returned. Both
// node-agent sockets (the CNI plugin's and ztunnel's) serve this way.
func Serve(ctx context.Context, ln *net.UnixListener, handle func(context.Context, *net.UnixConn)) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		return ln.Close()
	})
	g.Go(func() error {
		for {
			c, err := ln.AcceptUnix()
			if errors.Is(err, net.ErrClosed) {
				return nil // closed by the shutdown above
			}
			if err != nil {
				return fmt.Errorf("accept: %w", err)
			}
			g.Go(func() error {
				handle(ctx, c)
				return nil
			})
		}
	})
	return g.Wait()
}
