//go:build !unix

package hbone

import "io"

// waitReadable is a no-op where sockets cannot be peeked: the copy buffer is
// then held while the connection is idle.
func waitReadable(io.Reader) {}
