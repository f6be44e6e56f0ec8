// Package logging has log/slog helpers shared by the binaries.
package logging

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultQueue is how many records an Async handler holds before it drops.
const DefaultQueue = 4096

// Async is a slog.Handler that hands records to a goroutine of its own,
// which passes them to the wrapped handler. A hot path (ztunnel's access
// log: a line per connection) then pays for a record copy and a channel
// send, not for formatting and a write(2) on whatever goroutine closed the
// connection (a short-lived one, whose stack would grow for it). Records
// keep their order. When the queue is full, records are dropped and
// counted, as a non-blocking log writer does; the wrapped handler sees
// context.Background().
type Async struct {
	h slog.Handler
	q *asyncQueue
}

type asyncQueue struct {
	ch      chan queued
	dropped atomic.Uint64
	mu      sync.RWMutex // held for sending; Close takes it to close ch
	closed  bool
	done    chan struct{}
}

type queued struct {
	h slog.Handler
	r slog.Record
}

// NewAsync starts the goroutine passing records to h; queue <= 0 means
// DefaultQueue. Close stops it.
func NewAsync(h slog.Handler, queue int) *Async {
	if queue <= 0 {
		queue = DefaultQueue
	}
	q := &asyncQueue{ch: make(chan queued, queue), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for x := range q.ch {
			_ = x.h.Handle(context.Background(), x.r) // a handler's own errors are its to report
		}
	}()
	return &Async{h: h, q: q}
}

// Enabled reports whether the wrapped handler takes records at level.
func (a *Async) Enabled(ctx context.Context, level slog.Level) bool {
	return a.h.Enabled(ctx, level)
}

// Handle queues a copy of r, or drops it if the queue is full or the
// handler closed.
func (a *Async) Handle(_ context.Context, r slog.Record) error {
	q := a.q
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.dropped.Add(1)
		return nil
	}
	select {
	case q.ch <- queued{h: a.h, r: r.Clone()}:
	default:
		q.dropped.Add(1)
	}
	return nil
}

// WithAttrs returns a handler adding attrs, sharing this one's queue.
func (a *Async) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Async{h: a.h.WithAttrs(attrs), q: a.q}
}

// WithGroup returns a handler opening group name, sharing this one's queue.
func (a *Async) WithGroup(name string) slog.Handler {
	return &Async{h: a.h.WithGroup(name), q: a.q}
}

// Dropped is how many records were dropped (queue full, or after Close).
func (a *Async) Dropped() uint64 { return a.q.dropped.Load() }

// Close handles what is queued and stops the goroutine; records after it
// are dropped. It is safe to call more than once, from any handler sharing
// the queue.
func (a *Async) Close() {
	q := a.q
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
}
