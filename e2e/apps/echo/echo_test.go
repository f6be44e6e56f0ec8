package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHandlerDescribesRequest(t *testing.T) {
	cfg := Config{Pod: "echo-0", Namespace: "demo", Version: "v2"}
	tests := []struct {
		name       string
		target     string
		header     string
		wantStatus int
		wantPath   string
		wantQuery  string
	}{
		{name: "root", target: "/", wantStatus: 200, wantPath: "/"},
		{name: "path and query", target: "/a/b?x=1", header: "yes", wantStatus: 200, wantPath: "/a/b", wantQuery: "x=1"},
		{name: "status code", target: "/status/503", wantStatus: 503, wantPath: "/status/503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tt.target, nil)
			req.RemoteAddr = "10.0.0.7:41000"
			if tt.header != "" {
				req.Header.Set("X-Test", tt.header)
			}
			rec := httptest.NewRecorder()
			newHandler(cfg).ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			var got Response
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode body %q: %v", rec.Body, err)
			}
			if got.Pod != "echo-0" || got.Namespace != "demo" || got.Version != "v2" {
				t.Errorf("identity = %q/%q %q, want demo/echo-0 v2", got.Namespace, got.Pod, got.Version)
			}
			if got.Method != http.MethodPost || got.Path != tt.wantPath || got.Query != tt.wantQuery {
				t.Errorf("request = %s %s?%s, want POST %s?%s", got.Method, got.Path, got.Query, tt.wantPath, tt.wantQuery)
			}
			if got.RemoteAddr != "10.0.0.7:41000" {
				t.Errorf("remote_addr = %q", got.RemoteAddr)
			}
			if got.Status != tt.wantStatus {
				t.Errorf("body status = %d, want %d", got.Status, tt.wantStatus)
			}
			if h := strings.Join(got.Headers["X-Test"], ","); h != tt.header {
				t.Errorf("X-Test header = %q, want %q", h, tt.header)
			}
		})
	}
}

func TestHandlerHealthz(t *testing.T) {
	rec := httptest.NewRecorder()
	newHandler(Config{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
		t.Fatalf("healthz = %d %q, want 200 \"ok\\n\"", rec.Code, rec.Body)
	}
}

func TestHandlerRejectsBadStatus(t *testing.T) {
	for _, target := range []string{"/status/abc", "/status/99", "/status/600"} {
		rec := httptest.NewRecorder()
		newHandler(Config{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status = %d, want 400", target, rec.Code)
		}
	}
}

// startEcho serves TCP echo on a loopback port. stop shuts the server down and
// returns serveEcho's result; it runs at cleanup if the test did not call it.
func startEcho(t *testing.T) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveEcho(ctx, ln, slog.New(slog.DiscardHandler)) }()
	stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serveEcho: %v", err)
		}
	})
	return ln.Addr().String(), stop
}

func TestTCPEchoRepliesUntilHalfClose(t *testing.T) {
	addr, _ := startEcho(t)
	for _, msg := range []string{"", "hello", strings.Repeat("x", 1<<20)} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		errc := make(chan error, 1)
		go func() {
			_, err := io.WriteString(c, msg)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("read echo of %d bytes: %v", len(msg), err)
		}
		if werr := <-errc; werr != nil {
			t.Fatalf("write: %v", werr)
		}
		if string(got) != msg {
			t.Errorf("echo of %d bytes returned %d bytes", len(msg), len(got))
		}
		c.Close()
	}
}

func TestTCPEchoShutdownClosesOpenConns(t *testing.T) {
	addr, stop := startEcho(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A round trip proves the server has accepted and is tracking the conn.
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("serveEcho: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("conn still open after shutdown")
	}
}

func TestParseConfig(t *testing.T) {
	t.Setenv("POD_NAME", "echo-abc")
	t.Setenv("POD_NAMESPACE", "ns1")
	t.Setenv("VERSION", "v1")
	tests := []struct {
		name    string
		args    []string
		want    Config
		wantErr bool
	}{
		{name: "defaults", want: Config{HTTPAddr: ":8080", TCPAddr: ":9000", Pod: "echo-abc", Namespace: "ns1", Version: "v1"}},
		{name: "flags", args: []string{"-http", ":80", "-tcp", "", "-version", "v3"}, want: Config{HTTPAddr: ":80", Pod: "echo-abc", Namespace: "ns1", Version: "v3"}},
		{name: "nothing to serve", args: []string{"-http", "", "-tcp", ""}, wantErr: true},
		{name: "stray argument", args: []string{"x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
		})
	}
}
