//go:build !unix

package hbone

import (
	"io"
	"syscall"
)

// readPooled reads once from r into a pooled buffer; see the unix version.
// Here the buffer is held while Read waits.
func readPooled(r io.Reader, big bool) (*[]byte, int, error) {
	return readPlain(r, big)
}

// writeNow writes nothing here: the caller's fallback (a goroutine) does.
func writeNow(syscall.RawConn, []byte) int { return 0 }
