package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// protocol is what a tunnel carries.
type protocol uint8

const (
	protoTCP protocol = iota
	protoHTTP1
	protoH2C
)

func (p protocol) String() string {
	switch p {
	case protoHTTP1:
		return "http/1.1"
	case protoH2C:
		return "h2c"
	}
	return "tcp"
}

// h2Preface is the HTTP/2 client connection preface (RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// httpMethods are the request line starts that identify HTTP/1.x.
var httpMethods = []string{"GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// classify decides from the first bytes of a stream: ok false means more
// bytes are needed.
func classify(b []byte) (p protocol, ok bool) {
	undecided := false
	if n := min(len(b), len(h2Preface)); bytes.Equal(b[:n], []byte(h2Preface[:n])) {
		if n == len(h2Preface) {
			return protoH2C, true
		}
		undecided = true
	}
	for _, m := range httpMethods {
		n := min(len(b), len(m))
		if !bytes.Equal(b[:n], []byte(m[:n])) {
			continue
		}
		if n == len(m) {
			return protoHTTP1, true
		}
		undecided = true
	}
	if undecided {
		return 0, false
	}
	return protoTCP, true
}

// detect reads the start of c (within timeout) to tell HTTP/1.1 and h2c
// from anything else. The bytes read stay in br. A client that sends too
// little before the timeout, or ends, is TCP.
func detect(c net.Conn, br *bufio.Reader, timeout time.Duration) (protocol, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return protoTCP, err
	}
	p, err := sniff(br)
	if derr := c.SetReadDeadline(time.Time{}); err == nil {
		err = derr
	}
	return p, err
}

func sniff(br *bufio.Reader) (protocol, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if p, ok := classify(b); ok {
			return p, nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) {
				return protoTCP, nil // TCP: relay whatever came
			}
			return protoTCP, err
		}
		n = len(b)
	}
}

// peekedConn is a connection whose first bytes sit in a bufio.Reader.
type peekedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.br.Buffered() > 0 {
		return c.br.Read(p)
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes when the underlying connection can.
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
