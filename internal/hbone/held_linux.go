package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// heldSock is a Bridge's socket that leaves the net package while its
// tunnel is idle. A socket held by a *net.TCPConn costs about a kilobyte
// of process memory (the netFD, its poll descriptor, the connection and
// its two addresses with the socket addresses they were parsed from);
// detached, it is a bare descriptor in the parker's epoll set and costs
// nothing but this struct. The first operation after that (data to read,
// data to write, a half-close or close) attaches it again: a new net.Conn
// over the same socket, about 20 microseconds.
//
// Every operation on the socket goes through the heldSock: the Bridge's
// copies take the connection with use and give it back with done, so that
// the socket is never detached under a running read or write. Close does
// not wait for them: it closes the connection, which ends them.
type heldSock struct {
	mu     sync.Mutex
	c      net.Conn        // nil while detached or once closed
	rc     syscall.RawConn // c's
	fd     int             // the socket's descriptor while detached, else -1
	users  int32           // operations running on c
	closed bool
	// park is the parker entry of the direction reading this socket, if
	// any: its epoll registration moves with the descriptor.
	park *parkEntry
}

// DetachedSockets reports how many idle sockets are held outside the net
// package (heldSock).
func DetachedSockets() int { return int(detachedSockets.Load()) }

var detachedSockets atomic.Int64

// holdSocket returns a heldSock for v if v is a TCP or Unix socket the
// parker can watch, else v.
func holdSocket(v io.ReadWriteCloser) io.ReadWriteCloser {
	if !isSocket(v) {
		return v
	}
	rc := socketRaw(v)
	if rc == nil {
		return v
	}
	return &heldSock{c: v.(net.Conn), rc: rc, fd: -1}
}

// inNet reports whether the socket is open and held by a net.Conn.
func (s *heldSock) inNet() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.c != nil
}

// use returns the connection, attached again if it was detached, for an
// operation; the caller calls done after it.
func (s *heldSock) use() (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, net.ErrClosed
	}
	if s.c == nil {
		if err := s.attachLocked(); err != nil {
			return nil, err
		}
	}
	s.users++
	return s.c, nil
}

func (s *heldSock) done() {
	s.mu.Lock()
	s.users--
	s.mu.Unlock()
}

func (s *heldSock) Read(p []byte) (int, error) {
	c, err := s.use()
	if err != nil {
		return 0, err
	}
	defer s.done()
	return c.Read(p)
}

func (s *heldSock) Write(p []byte) (int, error) {
	c, err := s.use()
	if err != nil {
		return 0, err
	}
	defer s.done()
	return c.Write(p)
}

// CloseWrite half-closes the socket.
func (s *heldSock) CloseWrite() error {
	c, err := s.use()
	if err != nil {
		return err
	}
	defer s.done()
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// Close closes the socket, attached or not, and ends the operations
// running on it.
func (s *heldSock) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.closed = true
	c, fd := s.c, s.fd
	s.fd = -1
	if c == nil {
		detachedSockets.Add(-1)
	}
	s.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	// The only descriptor of the socket: closing it also takes it out of
	// the parker's epoll set.
	return os.NewSyscallError("close", unix.Close(fd))
}

// detach moves the socket out of the net package if nothing is using it:
// a duplicate of its descriptor takes over its registration with the
// parker, and the connection is closed (which closes only the original
// descriptor: no FIN is sent, the socket lives on).
func (s *heldSock) detach() {
	if idleParker.keepAttached.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.c == nil || s.users > 0 {
		return
	}
	var nfd int
	var err error
	cerr := s.rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if err == nil {
			s.unregisterLocked(int(fd))
		}
	})
	if cerr != nil || err != nil {
		return // closed behind our back, or out of descriptors: stay
	}
	_ = s.c.Close()
	s.c, s.rc, s.fd = nil, nil, nfd
	detachedSockets.Add(1)
	s.reregisterLocked()
}

// attachLocked gives a detached socket a net.Conn again. If that fails
// (out of descriptors), the socket is closed and the error returned.
func (s *heldSock) attachLocked() error {
	s.unregisterLocked(s.fd)
	f := os.NewFile(uintptr(s.fd), "")
	c, err := net.FileConn(f) // a new descriptor for the same socket
	f.Close()
	s.fd = -1
	detachedSockets.Add(-1)
	if err != nil {
		s.closed = true
		return err
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		c.Close()
		s.closed = true
		return err
	}
	s.c, s.rc = c, rc
	s.reregisterLocked()
	return nil
}

// unregisterLocked takes descriptor fd out of the parker's epoll set if the
// reading direction registered it. An epoll registration belongs to a
// descriptor and its socket together and lives as long as the socket:
// it must be removed before the descriptor is closed while the socket
// stays open through another one.
func (s *heldSock) unregisterLocked(fd int) {
	e := s.park
	if e == nil || !e.registered.Load() {
		return
	}
	err := unix.EpollCtl(idleParker.epollFD(), unix.EPOLL_CTL_DEL, fd, nil)
	if err == nil || errors.Is(err, unix.ENOENT) {
		e.registered.Store(false)
		e.moved = true
	}
}

// reregisterLocked registers the socket's new descriptor in place of the
// one unregisterLocked removed, armed: if the direction is parked, its
// wake-up must not be lost; if it is not, the parker ignores the event.
func (s *heldSock) reregisterLocked() {
	e := s.park
	if e == nil || !e.moved {
		return
	}
	e.moved = false
	_ = s.controlLocked(func(fd uintptr) {
		if err := epollCtl(idleParker.epollFD(), unix.EPOLL_CTL_ADD, int(fd), e); err == nil {
			e.registered.Store(true)
		}
	})
}

// controlLocked runs f with the socket's current descriptor.
func (s *heldSock) controlLocked(f func(fd uintptr)) error {
	switch {
	case s.closed:
		return net.ErrClosed
	case s.c == nil:
		f(uintptr(s.fd))
		return nil
	}
	return s.rc.Control(f)
}

// heldRaw is a heldSock seen as a syscall.RawConn: the parker arms its
// descriptor and a session's read loop writes to it, attached or not.
type heldRaw heldSock

func (r *heldRaw) Control(f func(fd uintptr)) error {
	s := (*heldSock)(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.controlLocked(f)
}

// Read and Write run f once on a detached socket (which has no poller to
// wait with) and report EAGAIN if it asks to wait.
func (r *heldRaw) Read(f func(fd uintptr) bool) error {
	return (*heldSock)(r).io(f, false)
}

func (r *heldRaw) Write(f func(fd uintptr) bool) error {
	return (*heldSock)(r).io(f, true)
}

func (s *heldSock) io(f func(fd uintptr) bool, write bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	if s.c == nil {
		defer s.mu.Unlock()
		if !f(uintptr(s.fd)) {
			return syscall.EAGAIN
		}
		return nil
	}
	rc := s.rc
	s.users++
	s.mu.Unlock()
	defer s.done()
	if write {
		return rc.Write(f)
	}
	return rc.Read(f)
}

// acquire returns what an operation on v uses: for a heldSock, its
// connection (the caller calls h.done after), else v itself.
func acquire(v io.Writer) (w io.Writer, h *heldSock, err error) {
	h, ok := v.(*heldSock)
	if !ok {
		return v, nil, nil
	}
	c, err := h.use()
	if err != nil {
		return nil, nil, err
	}
	return c, h, nil
}
