package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// serveBody runs one request with a body through the proxy, as serve does
// for requests without one.
func serveBody(p *Proxy, method, target, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r = r.WithContext(context.WithValue(r.Context(), connInfoKey{}, &connInfo{target: testVIP}))
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	return w
}

// recordDials keeps the upstream connections p dials from now on.
func recordDials(p *Proxy) *[]net.Conn {
	var conns []net.Conn
	dial := p.dialer
	p.dialer = func(ctx context.Context, n, a string) (net.Conn, error) {
		c, err := dial(ctx, n, a)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	}
	return &conns
}

// TestUpstreamConnectionReuse: requests sent whole reuse the upstream
// connection. One the server closed while it was idle is not held against
// the next request: an idempotent one goes on a new connection; one that
// may not be sent twice takes only a connection used in the last second
// and dials otherwise; a request the server dropped unanswered is sent
// again only if it may be.
func TestUpstreamConnectionReuse(t *testing.T) {
	tests := []struct {
		name   string
		method string
		// before the second request: the server drops the first
		// connection (closeIdle), or time passes (idle).
		closeIdle bool
		idle      time.Duration
		// dropSecond: the app reads the second request and closes the
		// connection without answering.
		dropSecond bool
		wantCode   int
		wantDials  int
		wantCalls  int32 // requests the app saw, the first included
	}{
		{"reused", "POST", false, 0, false, 200, 1, 2},
		{"idle a while, idempotent", "GET", false, 10 * time.Second, false, 200, 1, 2},
		{"idle a while, not idempotent", "POST", false, 10 * time.Second, false, 200, 2, 2},
		{"closed by the server, idempotent", "GET", true, 10 * time.Second, false, 200, 2, 2},
		{"closed by the server, not idempotent", "POST", true, 10 * time.Second, false, 200, 2, 2},
		{"dropped unanswered, idempotent", "GET", false, 0, true, 200, 2, 3},
		{"dropped unanswered, not idempotent", "POST", false, 0, true, 503, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var calls atomic.Int32
				u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					if calls.Add(1) == 2 && tt.dropSecond {
						c, _, _ := http.NewResponseController(w).Hijack()
						c.Close()
						return
					}
					_, _ = io.WriteString(w, "ok")
				})
				p := testProxy(t, u, toEcho(), Config{})
				dialed := recordDials(p)
				if w := serveBody(p, tt.method, "http://echo/", "hello"); w.Code != 200 {
					t.Fatalf("first request: %d", w.Code)
				}
				if tt.closeIdle { // as a server's keep-alive timeout does
					synctest.Wait() // the server has the connection idle
					u.srv.SetKeepAlivesEnabled(false)
					u.srv.SetKeepAlivesEnabled(true)
				}
				time.Sleep(tt.idle)
				w := serveBody(p, tt.method, "http://echo/", "hello")
				if w.Code != tt.wantCode {
					t.Errorf("second request: %d, want %d", w.Code, tt.wantCode)
				}
				if n := len(*dialed); n != tt.wantDials {
					t.Errorf("%d connections dialed, want %d", n, tt.wantDials)
				}
				if got := calls.Load(); got != tt.wantCalls {
					t.Errorf("the app saw %d requests, want %d", got, tt.wantCalls)
				}
			})
		})
	}
}

// TestUpstreamInformationalResponsesPassThrough: 1xx answers before the
// final one (103 Early Hints) reach the client.
func TestUpstreamInformationalResponsesPassThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "ok")
		})
		dial := runProxy(t, testProxy(t, u, toEcho(), Config{}))
		c := dial()
		go func() { _, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n") }()
		br := bufio.NewReader(c)
		for _, want := range []int{http.StatusEarlyHints, http.StatusOK} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("status %d, want %d", resp.StatusCode, want)
			}
			if want == http.StatusEarlyHints && resp.Header.Get("Link") == "" {
				t.Error("103 without its Link header")
			}
		}
	})
}

// TestUpstreamResponseHeadersAreBounded: an upstream answering headers
// larger than MaxHeaderBytes gets the request failed, not buffered.
func TestUpstreamResponseHeadersAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Big", strings.Repeat("x", 8<<10))
		})
		u.srv.MaxHeaderBytes = 64 << 10
		p := testProxy(t, u, toEcho(), Config{MaxHeaderBytes: 4 << 10})
		if w := serve(p, "GET", "http://echo/"); w.Code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", w.Code)
		}
	})
}

// TestIdleUpstreamConnectionsAreClosed: an idle upstream connection is
// closed after the idle timeout, and the stale ones a request that may not
// be sent twice passes over are closed at once.
func TestIdleUpstreamConnectionsAreClosed(t *testing.T) {
	for _, tt := range []struct {
		name   string
		method string // of a second request, after 10 s; "" none
		wait   time.Duration
	}{
		{"idle timeout", "", upstreamIdleTimeout},
		{"passed over", "POST", 10 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
				p := testProxy(t, u, toEcho(), Config{})
				dialed := recordDials(p)
				if w := serve(p, "GET", "http://echo/"); w.Code != 200 {
					t.Fatalf("status %d", w.Code)
				}
				time.Sleep(tt.wait)
				if tt.method != "" {
					if w := serveBody(p, tt.method, "http://echo/", "x"); w.Code != 200 {
						t.Fatalf("second request: %d", w.Code)
					}
				}
				synctest.Wait()
				// A closed net.Pipe end fails writes at once.
				if _, err := (*dialed)[0].Write(nil); err == nil {
					t.Error("the idle connection is still open")
				}
			})
		})
	}
}

// TestUpstreamNewConnectionFailureIsTheAnswer: as with net/http's
// Transport, a request is sent again on another connection only when a
// reused one failed; a new connection failing is the upstream's answer.
func TestUpstreamNewConnectionFailureIsTheAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
		p := testProxy(t, u, toEcho(), Config{})
		dial := p.dialer
		dials := 0
		p.dialer = func(ctx context.Context, n, a string) (net.Conn, error) {
			c, err := dial(ctx, n, a)
			if dials++; dials == 1 && err == nil {
				c.Close() // broken from the start: the write fails
			}
			return c, err
		}
		if w := serve(p, "GET", "http://echo/"); w.Code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", w.Code)
		}
		if dials != 1 {
			t.Errorf("%d connections dialed, want 1", dials)
		}
	})
}
