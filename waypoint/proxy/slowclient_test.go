package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Bad clients and upstreams must not hold the waypoint's connections and
// goroutines for longer than its timeouts: these tests feed the HTTP server real
// (in-memory) connections inside a synctest bubble and check when it lets go.

// runProxy runs p until the test ends and returns a function opening client
// connections to the service VIP, as tunnels would.
func runProxy(t *testing.T, p *Proxy) func() net.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return func() net.Conn {
		client, server := net.Pipe()
		go func() { _ = p.serveHTTP(ctx, server, &connInfo{target: testVIP}) }()
		t.Cleanup(func() { client.Close() })
		return client
	}
}

// closedAfter reads from c until the proxy closes it and returns how long that took
// and what was read.
func closedAfter(c net.Conn) (time.Duration, string) {
	start := time.Now()
	b, _ := io.ReadAll(c)
	return time.Since(start), string(b)
}

// TestSlowHeadersAreCutOffAtReadHeaderTimeout: a client that never finishes its
// headers, or trickles them (slowloris), loses its connection when
// ReadHeaderTimeout has passed since the request began, however it paces bytes.
func TestSlowHeadersAreCutOffAtReadHeaderTimeout(t *testing.T) {
	for name, trickle := range map[string]bool{"stalled": false, "trickled": true} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				u := newUpstream(t, func(http.ResponseWriter, *http.Request) { t.Error("a request with unfinished headers reached the app") })
				dial := runProxy(t, testProxy(t, u, toEcho(), Config{ReadHeaderTimeout: 10 * time.Second}))
				c := dial()
				start := time.Now()
				writerDone := make(chan struct{})
				go func() {
					defer close(writerDone)
					if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\nX-Slow: "); err != nil || !trickle {
						return
					}
					for {
						time.Sleep(time.Second)
						if _, err := io.WriteString(c, "a"); err != nil {
							return
						}
					}
				}()
				_, got := closedAfter(c)
				c.Close()
				<-writerDone
				if d := time.Since(start); d < 10*time.Second || d > 11*time.Second {
					t.Errorf("connection closed after %v, want ReadHeaderTimeout (10s)", d)
				}
				if got != "" {
					t.Errorf("answered %q", got)
				}
			})
		})
	}
}

// TestIdleKeepAliveConnectionIsClosed: a client connection kept open without a
// next request is closed after IdleTimeout.
func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") })
		dial := runProxy(t, testProxy(t, u, toEcho(), Config{IdleTimeout: time.Minute}))
		c := dial()
		go func() { _, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n") }()
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("response %d, %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		start := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("read on the idle connection: %v, want EOF", err)
		}
		if d := time.Since(start); d < time.Minute || d > time.Minute+time.Second {
			t.Errorf("idle connection closed after %v, want IdleTimeout (1m)", d)
		}
	})
}

// TestStreamIdleTimeout: once its headers are in, a request whose body stalls, a
// client that stops reading the response, or an upstream that never answers is
// aborted after StreamIdleTimeout without progress (Envoy's 408 or 504), the
// upstream request is canceled and the connection freed. Progress, however slow,
// keeps a request alive.
func TestStreamIdleTimeout(t *testing.T) {
	const idle = 30 * time.Second
	tests := []struct {
		name string
		// app is the upstream handler; it reports on done when its request ended.
		app func(w http.ResponseWriter, r *http.Request)
		// client writes the request and reads what it wants.
		client func(c net.Conn)
		want   string // status line prefix the client gets, "" for none
		after  time.Duration
	}{
		{
			name: "stalled request body",
			app:  func(_ http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) },
			client: func(c net.Conn) {
				_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 100\r\n\r\n0123456789")
			},
			want: "HTTP/1.1 408", after: idle,
		},
		{
			name: "upstream never answers",
			app:  func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			client: func(c net.Conn) {
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
			},
			want: "HTTP/1.1 504", after: idle,
		},
		{
			name: "client stops reading",
			app: func(w http.ResponseWriter, r *http.Request) {
				// A declared length: ReverseProxy then copies without its flushing
				// writer, whose mutex synctest cannot see through.
				w.Header().Set("Content-Length", strconv.Itoa(1<<30))
				chunk := strings.Repeat("x", 32<<10)
				for r.Context().Err() == nil {
					if _, err := io.WriteString(w, chunk); err != nil {
						return
					}
				}
			},
			client: func(c net.Conn) {
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
			},
			want: "", after: idle,
		},
		{
			name: "slow but steady body",
			app: func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				_, _ = fmt.Fprintf(w, "%d", len(b))
			},
			client: func(c net.Conn) {
				_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 4\r\n\r\n")
				for range 4 { // 80 s in all, never 30 s idle
					time.Sleep(20 * time.Second)
					_, _ = io.WriteString(c, "x")
				}
			},
			want: "HTTP/1.1 200", after: 80 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				appDone := make(chan struct{})
				u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					defer close(appDone)
					tt.app(w, r)
				})
				// Long enough to be sure which timeout acts.
				dial := runProxy(t, testProxy(t, u, toEcho(), Config{StreamIdleTimeout: idle, IdleTimeout: time.Hour}))
				c := dial()
				start := time.Now()
				go tt.client(c)
				var status string
				if tt.want != "" {
					line, err := bufio.NewReader(c).ReadString('\n')
					if err != nil {
						t.Fatalf("no answer: %v", err)
					}
					status = line
				} else {
					time.Sleep(idle + time.Second) // the client reads nothing
				}
				d := time.Since(start)
				if !strings.HasPrefix(status, tt.want) {
					t.Errorf("answer %q, want %s", status, tt.want)
				}
				if tt.want != "" && (d < tt.after || d > tt.after+time.Second) {
					t.Errorf("answered after %v, want %v", d, tt.after)
				}
				select {
				case <-appDone:
				case <-time.After(time.Second):
					t.Error("the upstream request was not ended")
				}
				if tt.want == "" {
					// The proxy has let the connection go: it neither blocks on it nor keeps it.
					c.SetReadDeadline(time.Now().Add(time.Second))
					if _, err := io.Copy(io.Discard, c); err != nil {
						t.Errorf("connection not closed by the proxy: %v", err)
					}
				}
			})
		})
	}
}
