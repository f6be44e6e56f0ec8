package hbone

import (
	"errors"
	"net"
	"sync"
)

// batchMax bounds what a batchConn holds before writing regardless.
const batchMax = 256 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchMax); return &b }}

// batchConn is the transport under a tls.Conn. crypto/tls writes each
// record (16 KiB at most) with a write(2) of its own; once batching is on,
// batchConn gathers records until the session flushes, so that sending a
// 64 KiB DATA frame costs one system call, not four. The handshake runs
// unbatched.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      *[]byte // pending bytes, from batchPool; nil when none
}

// startBatching makes writes wait for Flush.
func (c *batchConn) startBatching() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = true
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if c.buf != nil && len(*c.buf)+len(p) > batchMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= batchMax {
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = batchPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// Flush writes what is pending.
func (c *batchConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if c.buf == nil {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	batchPool.Put(c.buf)
	c.buf = nil
	return err
}

// CloseWrite half-closes the connection underneath, if it can.
func (c *batchConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
