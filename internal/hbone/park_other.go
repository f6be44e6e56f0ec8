//go:build !linux

package hbone

import "io"

// sockHalf would be a Bridge direction parking its socket when idle; only
// Linux parks (epoll), elsewhere a goroutine waits in every direction.
type sockHalf struct{}

func newSockHalf(*Bridge, int, io.Writer, io.Reader) *sockHalf { return nil }

func (*sockHalf) run()    {}
func (*sockHalf) unpark() {}

// ParkedSockets reports how many idle sockets the process's parker is
// watching: none where there is no parker.
func ParkedSockets() int { return 0 }
