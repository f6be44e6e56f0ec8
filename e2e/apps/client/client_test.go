package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runCmd runs the client with args and returns its stdout.
func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, &stdout, &stderr)
	return stdout.String(), err
}

func TestHTTPPrintsBodies(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		switch r.URL.Path {
		case "/deny":
			http.Error(w, "RBAC: access denied", http.StatusForbidden)
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s host=%s x=%s body=%s", r.Method, r.URL.Path, r.Host, r.Header.Get("X-Test"), body)
		default:
			fmt.Fprintf(w, "hit %d\n", n)
		}
	}))
	defer srv.Close()

	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "one request", args: []string{srv.URL + "/"}, want: "hit 1\n"},
		{name: "count after URL", args: []string{srv.URL + "/", "-n", "3"}, want: "hit 1\nhit 2\nhit 3\n"},
		{
			name: "method headers host body",
			args: []string{"-X", "PUT", "-H", "X-Test: yes", "-host", "svc.local", "-d", "data", srv.URL + "/echo"},
			want: "PUT /echo host=svc.local x=yes body=data\n",
		},
		{name: "error status fails", args: []string{srv.URL + "/deny"}, want: "", wantErr: "HTTP 403 Forbidden: RBAC: access denied"},
		{name: "missing URL", args: nil, wantErr: "usage"},
		{name: "bad header", args: []string{"-H", "nocolon", srv.URL}, wantErr: "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			got, err := runCmd(t, append([]string{"http"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("stdout = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHTTPUsesNewConnectionPerRequest(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for _, tt := range []struct {
		args []string
		want int32
	}{
		{args: []string{"http", "-n", "3", srv.URL}, want: 3},
		{args: []string{"http", "-n", "3", "-keepalive", srv.URL}, want: 1},
	} {
		conns.Store(0)
		if _, err := runCmd(t, tt.args...); err != nil {
			t.Fatal(err)
		}
		if got := conns.Load(); got != tt.want {
			t.Errorf("%q opened %d connections, want %d", tt.args, got, tt.want)
		}
	}
}

func TestHTTPWaitRetriesUntilSuccess(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready")
	}))
	defer srv.Close()
	var out bytes.Buffer
	o := httpOptions{url: srv.URL, count: 1, method: http.MethodGet, timeout: 5 * time.Second, wait: 20 * time.Second, interval: time.Millisecond}
	err := doHTTP(context.Background(), o, &out)
	if got := out.String(); err != nil || got != "ready\n" {
		t.Fatalf("got %q, %v; want \"ready\\n\"", out.String(), err)
	}
}

// tcpServer accepts one connection at a time on loopback and hands it to
// handle, for the life of the test.
func tcpServer(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c.(*net.TCPConn))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestTCPRoundTrip(t *testing.T) {
	echo := tcpServer(t, func(c *net.TCPConn) {
		if _, err := io.Copy(c, c); err == nil {
			_ = c.CloseWrite()
		}
	})
	reject := tcpServer(t, func(c *net.TCPConn) {})
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr bool
	}{
		{name: "echo", args: []string{echo, "-msg", "ping"}, want: "ping\n"},
		{name: "default message", args: []string{echo}, want: "hello\n"},
		{name: "closed without reply", args: []string{reject}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runCmd(t, append([]string{"tcp"}, tt.args...)...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("stdout = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTCPTimesOut(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	// The server reads but never answers or closes until the test ends.
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c); <-hold })
	_, err := runCmd(t, "tcp", "-timeout", "200ms", addr)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestDNSResolvesHostsFile(t *testing.T) {
	got, err := runCmd(t, "dns", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "127.0.0.1\n") && !strings.Contains(got, "::1\n") {
		t.Errorf("localhost resolved to %q", got)
	}
}

func TestFileAndEchoCommands(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for p, content := range map[string]string{a: "one\n", b: "two\n"} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr bool
	}{
		{name: "cat", args: []string{"cat", a, b}, want: "one\ntwo\n"},
		{name: "cat missing", args: []string{"cat", filepath.Join(dir, "none")}, wantErr: true},
		{name: "echo-stdout", args: []string{"echo-stdout", "a", "b c"}, want: "a b c\n"},
		{name: "unknown", args: []string{"frobnicate"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runCmd(t, tt.args...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("stdout = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSleepReturnsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(ctx, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("sleep: %v", err)
	}
}
