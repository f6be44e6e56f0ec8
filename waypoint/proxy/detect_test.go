package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want protocol
		ok   bool
	}{
		{"GET / HTTP/1.1\r\n", protoHTTP1, true},
		{"POST ", protoHTTP1, true},
		{"OPTIONS * HTTP/1.1", protoHTTP1, true},
		{"PO", 0, false},
		{"P", 0, false}, // POST, PUT, PATCH or PRI
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", protoH2C, true},
		{"PRI * HTTP/2.0\r\n", 0, false},
		{"PRI * HTTP/1.1", protoTCP, true},
		{"\x16\x03\x01", protoTCP, true}, // TLS
		{"get / HTTP/1.1", protoTCP, true},
		{"GETX", protoTCP, true},
		{"SSH-2.0", protoTCP, true},
	}
	for _, tt := range tests {
		got, ok := classify([]byte(tt.in))
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("classify(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDetectKeepsBytesAndTimesOut(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = b.Write([]byte("PUT /x HTTP/1.1\r\n")) }()
	br := bufio.NewReader(a)
	p, err := detect(a, br, 5*time.Second)
	if err != nil || p != protoHTTP1 {
		t.Fatalf("detect = %v, %v", p, err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(&peekedConn{Conn: a, br: br}, got); err != nil || string(got) != "PUT " {
		t.Fatalf("bytes after detection: %q %v", got, err)
	}

	// A client that sends a prefix and goes quiet is TCP once the timeout
	// passes, and the deadline is cleared for the relay.
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	go func() { _, _ = d.Write([]byte("PO")) }()
	br = bufio.NewReader(c)
	if p, err := detect(c, br, 50*time.Millisecond); err != nil || p != protoTCP {
		t.Fatalf("quiet client: %v, %v", p, err)
	}
	go func() { _, _ = d.Write([]byte("ST")) }()
	rest := make([]byte, 4)
	if _, err := io.ReadFull(&peekedConn{Conn: c, br: br}, rest); err != nil || string(rest) != "POST" {
		t.Fatalf("relay after timeout: %q %v", rest, err)
	}
}

// FuzzClassify checks detection on untrusted first bytes: it never panics,
// decides within the preface length, and never calls HTTP what a strict
// prefix check would not.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", h2Preface, "PRI * HTTP/2.0\r\n\r\nSX", "\x16\x03\x01\x02", "DELETE"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var (
			p  protocol
			ok bool
			n  int
		)
		for n = 1; n <= len(b) && !ok; n++ {
			p, ok = classify(b[:n])
		}
		if !ok {
			if len(b) >= len(h2Preface) {
				t.Fatalf("undecided after %d bytes: %q", len(b), b)
			}
			return
		}
		switch p {
		case protoH2C:
			if !bytes.HasPrefix(b, []byte(h2Preface)) {
				t.Fatalf("h2c for %q", b)
			}
		case protoHTTP1:
			found := false
			for _, m := range httpMethods {
				found = found || bytes.HasPrefix(b, []byte(m))
			}
			if !found {
				t.Fatalf("HTTP/1 for %q", b)
			}
		}
	})
}
