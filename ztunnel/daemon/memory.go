package daemon

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory release after bursts. Go's collector sizes the heap for the last
// burst: after 10,000 connections open at once, a ztunnel keeps the pages
// the burst's garbage and goroutine stacks took (8-17 MiB at GOGC 50 in
// BenchmarkPrivilegedZtunnelProcesses): an idle process allocates nothing,
// so nothing triggers a collection for minutes, and the runtime's
// scavenger keeps free pages up to the heap goal the burst raised. A
// node's connections come in bursts (a deployment rolls, a job starts) and
// then idle, so ztunnel looks every ReleaseInterval and, once it has
// allocated at least ReleaseAfter since its last release and then been
// quiet for an interval (under ReleaseAfter/16 allocated), collects and
// returns the free pages at once (debug.FreeOSMemory: one collection, a
// few milliseconds of CPU for a heap of tens of MiB). A busy ztunnel is
// left to the runtime: what it frees it is about to use again. A trickle
// of connections costs one collection per ReleaseAfter allocated. Envoy's
// allocator releases free memory on a timer in the same spirit
// (memory_allocator_manager).
const (
	ReleaseInterval = 5 * time.Second
	ReleaseAfter    = 16 << 20
)

// memoryReleaser decides, from the runtime's allocation count, when to
// give memory back.
type memoryReleaser struct {
	allocs      []metrics.Sample
	last        uint64 // allocated bytes at the last check
	lastRelease uint64 // and at the last release
}

func newMemoryReleaser() *memoryReleaser {
	m := &memoryReleaser{allocs: []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}}
	m.released() // the baseline: a burst is counted from here
	return m
}

func (m *memoryReleaser) read() uint64 {
	metrics.Read(m.allocs)
	return m.allocs[0].Value.Uint64()
}

// check reports whether to release now.
func (m *memoryReleaser) check() bool {
	now := m.read()
	interval := now - m.last
	m.last = now
	return shouldRelease(now-m.lastRelease, interval)
}

// released notes a release: the next needs another ReleaseAfter.
func (m *memoryReleaser) released() {
	m.last = m.read()
	m.lastRelease = m.last
}

// shouldRelease is the policy: a burst's worth allocated since the last
// release, and a quiet interval since.
func shouldRelease(sinceRelease, lastInterval uint64) bool {
	return sinceRelease >= ReleaseAfter && lastInterval < ReleaseAfter/16
}

// ReleaseMemoryWhenQuiet runs the release policy above until ctx ends.
// log may be nil.
func ReleaseMemoryWhenQuiet(ctx context.Context, log *slog.Logger) {
	releaseMemoryWhenQuiet(ctx, log, ReleaseInterval)
}

func releaseMemoryWhenQuiet(ctx context.Context, log *slog.Logger, every time.Duration) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMemoryReleaser()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if m.check() {
			before := retainedBytes()
			debug.FreeOSMemory()
			m.released()
			log.Debug("returned free memory to the OS after a burst", "before_bytes", before, "after_bytes", retainedBytes())
		}
	}
}

// retainedBytes is the memory the runtime has mapped and not returned:
// about what it adds to the process's RSS.
func retainedBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}
