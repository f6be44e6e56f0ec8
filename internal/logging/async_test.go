package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// blockingHandler blocks in Handle until released, recording lines.
type blockingHandler struct {
	slog.Handler
	release chan struct{}
}

func (b blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	<-b.release
	return b.Handler.Handle(ctx, r)
}

func (b blockingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return blockingHandler{b.Handler.WithAttrs(attrs), b.release}
}

func TestAsyncKeepsOrderAndAttributes(t *testing.T) {
	var buf bytes.Buffer
	a := NewAsync(slog.NewJSONHandler(&buf, nil), 0)
	log := slog.New(a).With("component", "access")
	for i := range 100 {
		// Attributes beyond the record's inline five must survive the copy.
		log.Info("connection complete", "conn", i, "a", 1, "b", 2, "c", 3, "d", 4, "e", 5, "f", 6)
	}
	a.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 100 {
		t.Fatalf("%d lines, want 100", len(lines))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		if m["conn"] != float64(i) || m["component"] != "access" || m["f"] != float64(6) {
			t.Fatalf("line %d out of order or incomplete: %s", i, l)
		}
	}
	if a.Dropped() != 0 {
		t.Errorf("dropped %d", a.Dropped())
	}
}

func TestAsyncDropsWhenFullWithoutBlocking(t *testing.T) {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	release := make(chan struct{})
	inner := blockingHandler{slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil), release}
	a := NewAsync(inner, 4)
	log := slog.New(a)
	// One record is taken by the goroutine (blocked in Handle), four fill
	// the queue, the rest must be dropped at once rather than block.
	for i := range 20 {
		log.Info("x", "i", i)
	}
	close(release)
	a.Close()
	mu.Lock()
	n := strings.Count(buf.String(), "\n")
	mu.Unlock()
	if n < 4 || n > 5 || a.Dropped() != uint64(20-n) {
		t.Fatalf("%d handled, %d dropped; want 4 or 5 handled and the rest dropped", n, a.Dropped())
	}
	log.Info("after close")
	if a.Dropped() != uint64(21-n) {
		t.Errorf("a record after Close was not dropped")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
