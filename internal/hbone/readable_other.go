//go:build !unix

package hbone

import (
	"io"
	"net"
	"syscall"
)

// pooledReader reads r once per read into a pooled buffer; see the unix
// version. Here the buffer is held while Read waits.
type pooledReader struct {
	r   io.Reader
	big bool
}

func newPooledReader(r io.Reader) *pooledReader { return &pooledReader{r: r} }

func (pr *pooledReader) read() (*[]byte, int, error) { return readPlain(pr.r, pr.big) }

// writeNow writes nothing here: the caller's fallback (a goroutine) does.
func writeNow(syscall.RawConn, []byte) int { return 0 }

// idleRaw returns nil: sessions do not idle here.
func idleRaw(net.Conn) syscall.RawConn { return nil }

// waitReadable is not called here.
func waitReadable(syscall.RawConn) {}
