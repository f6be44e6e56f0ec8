package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// writeCounter counts the writes made on the upstream connections.
type writeCounter struct {
	mu     sync.Mutex
	writes int
}

func (wc *writeCounter) wrap(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, n, a string) (net.Conn, error) {
		c, err := dial(ctx, n, a)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: c, wc: wc}, nil
	}
}

func (wc *writeCounter) count() int {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.writes
}

type countedConn struct {
	net.Conn
	wc *writeCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.wc.mu.Lock()
	c.wc.writes++
	c.wc.mu.Unlock()
	return c.Conn.Write(p)
}

// trickleBody yields its first part, then the rest once release is closed:
// a body whose end has not arrived when the request starts.
type trickleBody struct {
	first, rest []byte
	release     chan struct{}
}

func (b *trickleBody) Read(p []byte) (int, error) {
	if len(b.first) > 0 {
		n := copy(p, b.first)
		b.first = b.first[n:]
		return n, nil
	}
	<-b.release
	if len(b.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

// TestSmallBodyGoesUpstreamWithItsHeaders: a request whose body of known
// length has arrived whole goes upstream in one write, headers and body
// together, as does a request without a body; a body still arriving is
// streamed (the app gets it whole, in more writes).
func TestSmallBodyGoesUpstreamWithItsHeaders(t *testing.T) {
	body := strings.Repeat("x", 1024)
	tests := []struct {
		name   string
		method string
		body   func() (io.Reader, int64, chan struct{})
		writes func(n int) bool
		want   string // what the app reads
	}{
		{"whole 1 KiB body", "POST", func() (io.Reader, int64, chan struct{}) {
			return strings.NewReader(body), int64(len(body)), nil
		}, func(n int) bool { return n == 1 }, body},
		{"no body", "GET", func() (io.Reader, int64, chan struct{}) { return nil, 0, nil }, func(n int) bool { return n == 1 }, ""},
		{"body still arriving", "POST", func() (io.Reader, int64, chan struct{}) {
			release := make(chan struct{})
			return &trickleBody{first: []byte(body[:100]), rest: []byte(body[100:]), release: release}, int64(len(body)), release
		}, func(n int) bool { return n > 1 }, body},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				got := make(chan string, 1)
				u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					got <- string(b)
				})
				p := testProxy(t, u, toEcho(), Config{})
				var wc writeCounter
				p.dialer = wc.wrap(p.dialer)
				src, n, release := tt.body()
				r := httptest.NewRequest(tt.method, "http://echo/", src)
				r.ContentLength = n
				r = r.WithContext(context.WithValue(r.Context(), connInfoKey{}, &connInfo{target: testVIP}))
				w := httptest.NewRecorder()
				done := make(chan struct{})
				go func() { defer close(done); p.ServeHTTP(w, r) }()
				if release != nil {
					synctest.Wait() // the request is upstream with what had arrived
					close(release)
				}
				<-done
				if w.Code != http.StatusOK {
					t.Fatalf("status %d", w.Code)
				}
				if b := <-got; b != tt.want {
					t.Errorf("app read %d bytes, want %d", len(b), len(tt.want))
				}
				if n := wc.count(); !tt.writes(n) {
					t.Errorf("request went upstream in %d writes", n)
				}
			})
		})
	}
}

// TestReadAheadBodyIsReplayed: a body read ahead whole is resent from
// memory on retry, and one read ahead in part is replayed too.
func TestReadAheadBodyIsReplayed(t *testing.T) {
	for _, whole := range []bool{true, false} {
		src := &trickleBody{first: []byte("hello "), rest: []byte("world"), release: make(chan struct{})}
		if whole {
			src = &trickleBody{first: []byte("hello world"), release: make(chan struct{})}
		}
		close(src.release)
		b := newReplayBody(io.NopCloser(src), 64)
		b.readAhead(len("hello world"))
		if _, ok := b.complete(); ok != whole {
			t.Fatalf("whole=%v: complete after read-ahead = %v", whole, ok)
		}
		for i := range 2 {
			all, err := io.ReadAll(b.attempt())
			if err != nil || !bytes.Equal(all, []byte("hello world")) {
				t.Fatalf("whole=%v: attempt %d read %q %v", whole, i, all, err)
			}
		}
	}
}

// TestRequestTimeoutWhileBodyHasNotStarted: a request whose body has not
// begun to arrive gets the route's request timeout (504), as it would had
// it gone upstream, not the longer stream idle timeout.
func TestRequestTimeoutWhileBodyHasNotStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(t, func(_ http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
		rule := toEcho()
		rule.Timeouts.Request = time.Second
		dial := runProxy(t, testProxy(t, u, rule, Config{StreamIdleTimeout: time.Minute}))
		c := dial()
		start := time.Now()
		go func() { _, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 10\r\n\r\n") }()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if !strings.HasPrefix(line, "HTTP/1.1 504") {
			t.Errorf("answer %q, want 504", line)
		}
		if d := time.Since(start); d < time.Second || d > 2*time.Second {
			t.Errorf("answered after %v, want the request timeout (1s)", d)
		}
	})
}
