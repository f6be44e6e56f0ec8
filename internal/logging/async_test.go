package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
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
	// The first record is taken by the goroutine (blocked in Handle) and
	// counts against the queue with the three after it; the rest must be
	// dropped at once rather than block.
	for i := range 20 {
		log.Info("x", "i", i)
	}
	close(release)
	a.Close()
	mu.Lock()
	n := strings.Count(buf.String(), "\n")
	mu.Unlock()
	if n != 4 || a.Dropped() != 16 {
		t.Fatalf("%d handled, %d dropped; want 4 handled and 16 dropped", n, a.Dropped())
	}
	log.Info("after close")
	if a.Dropped() != 17 {
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

func TestAsyncGivesBackABacklogsMemory(t *testing.T) {
	release := make(chan struct{})
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	a := NewAsync(blockingHandler{slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil), release}, 0)
	defer a.Close()
	log := slog.New(a)
	for i := range 1000 {
		log.Info("x", "i", i)
	}
	close(release)
	for {
		a.q.mu.Lock()
		pending, held := a.q.pending, cap(a.q.items)+cap(a.q.spare)
		a.q.mu.Unlock()
		if pending == 0 {
			if held > keepBatch {
				t.Fatalf("an idle handler holds room for %d records after a backlog; want <= %d", held, keepBatch)
			}
			break
		}
		runtime.Gosched()
	}
	mu.Lock()
	n := strings.Count(buf.String(), "\n")
	mu.Unlock()
	if n != 1000 || a.Dropped() != 0 {
		t.Fatalf("%d handled, %d dropped; want 1000 and 0", n, a.Dropped())
	}
}
