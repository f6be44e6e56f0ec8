package seqpacket

import (
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzParseRights: arbitrary ancillary data never panics. Descriptors "parsed" from
// fuzz input are never closed: they are not ours.
func FuzzParseRights(f *testing.F) {
	f.Add(unix.UnixRights(3))
	f.Add(unix.UnixRights(3, 4, 5))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		_, _ = ParseRights(oob)
	})
}
