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

// keepBatch is the largest batch whose slice the writer keeps for the next
// one; a larger one (a backlog) goes back to the collector, so that an
// idle handler holds a few KiB, not its whole queue (4,096 records are
// about 1.2 MiB).
const keepBatch = 64

// Async is a slog.Handler that hands records to a goroutine of its own,
// which passes them to the wrapped handler. A hot path (ztunnel's access
// log: a line per connection) then pays for a record copy and a queue
// append, not for formatting and a write(2) on whatever goroutine closed
// the connection (a short-lived one, whose stack would grow for it).
// Records keep their order. When the queue is full, records are dropped
// and counted, as a non-blocking log writer does; the wrapped handler sees
// context.Background().
type Async struct {
	h slog.Handler
	q *asyncQueue
}

type asyncQueue struct {
	max     int
	dropped atomic.Uint64
	wake    chan struct{} // one pending wake-up for the writer
	done    chan struct{}

	mu      sync.Mutex
	items   []queued // waiting for the writer
	spare   []queued // the writer's last batch, emptied, for reuse
	pending int      // items plus the batch the writer is handling
	closed  bool
}

type queued struct {
	h slog.Handler
	r slog.Record
}

// NewAsync starts the goroutine passing records to h; queue <= 0 means
// DefaultQueue. At most queue records wait or are being handled; the
// memory for them is taken as they come. Close stops it.
func NewAsync(h slog.Handler, queue int) *Async {
	if queue <= 0 {
		queue = DefaultQueue
	}
	q := &asyncQueue{max: queue, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return &Async{h: h, q: q}
}

// run hands batches of records to their handlers until the queue is
// closed and empty.
func (q *asyncQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return // closed and drained
		}
		batch := q.items
		q.items, q.spare = q.spare, nil
		q.mu.Unlock()

		for _, x := range batch {
			_ = x.h.Handle(context.Background(), x.r) // a handler's own errors are its to report
		}
		clear(batch) // the records' attributes may hold anything
		q.mu.Lock()
		q.pending -= len(batch)
		if cap(batch) <= keepBatch {
			q.spare = batch[:0]
		}
		q.mu.Unlock()
	}
}

// Enabled reports whether the wrapped handler takes records at level.
func (a *Async) Enabled(ctx context.Context, level slog.Level) bool {
	return a.h.Enabled(ctx, level)
}

// Handle queues a copy of r, or drops it if the queue is full or the
// handler closed.
func (a *Async) Handle(_ context.Context, r slog.Record) error {
	q := a.q
	q.mu.Lock()
	if q.closed || q.pending >= q.max {
		q.mu.Unlock()
		q.dropped.Add(1)
		return nil
	}
	q.items = append(q.items, queued{h: a.h, r: r.Clone()})
	q.pending++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
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
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	<-q.done
}
