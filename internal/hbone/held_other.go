//go:build !linux

package hbone

import (
	"io"
	"net"
	"syscall"
)

// heldSock would be a socket that leaves the net package while idle; only
// Linux has the parker that watches such sockets, so none is made here.
type heldSock struct{}

// heldRaw is a heldSock seen as a syscall.RawConn.
type heldRaw heldSock

func (*heldRaw) Control(func(fd uintptr)) error    { return net.ErrClosed }
func (*heldRaw) Read(func(fd uintptr) bool) error  { return net.ErrClosed }
func (*heldRaw) Write(func(fd uintptr) bool) error { return net.ErrClosed }

func (*heldSock) done() {}

// holdSocket returns v: sockets stay in the net package here.
func holdSocket(v io.ReadWriteCloser) io.ReadWriteCloser { return v }

// acquire returns v.
func acquire(v io.Writer) (io.Writer, *heldSock, error) { return v, nil, nil }

// DetachedSockets reports how many idle sockets are held outside the net
// package: none here.
func DetachedSockets() int { return 0 }

var _ syscall.RawConn = (*heldRaw)(nil)
