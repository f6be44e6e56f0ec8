package proxy

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// errStreamIdle is the cancel cause of an exchange idle guard aborted.
var errStreamIdle = errors.New("stream idle timeout")

// idleGuard aborts an exchange that makes no progress (no request body read, no
// response body written) for StreamIdleTimeout, as Envoy's stream idle timeout
// does: it bounds what a client that sends or reads slowly, or an upstream that
// never answers, can hold. Aborting cancels the exchange's context (the upstream
// request) and expires the client stream's deadlines, which unblocks reads from a
// stalled body and writes to a client that stopped reading.
type idleGuard struct {
	d      time.Duration
	last   atomic.Int64 // time of the last progress, in nanoseconds since start
	start  time.Time
	rc     *http.ResponseController
	cancel context.CancelCauseFunc
	fired  atomic.Bool

	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
}

// guardIdle starts the guard of one exchange; ctx is the exchange's context,
// canceled with errStreamIdle when the guard fires. stop must be called before
// the handler returns.
func guardIdle(ctx context.Context, w http.ResponseWriter, d time.Duration) (context.Context, *idleGuard) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := &idleGuard{d: d, start: time.Now(), rc: http.NewResponseController(w), cancel: cancel}
	g.timer = time.AfterFunc(d, g.check)
	return ctx, g
}

// progress notes that bytes moved.
func (g *idleGuard) progress() {
	if g != nil {
		g.last.Store(int64(time.Since(g.start)))
	}
}

// check fires the guard if nothing moved for d, else waits for the rest.
func (g *idleGuard) check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	idle := time.Since(g.start) - time.Duration(g.last.Load())
	if idle < g.d {
		g.timer.Reset(g.d - idle)
		return
	}
	g.fired.Store(true)
	g.cancel(errStreamIdle)
	now := time.Now()
	_ = g.rc.SetReadDeadline(now)
	// The error answer gets a moment to go out; a client that does not read
	// it loses the connection then.
	_ = g.rc.SetWriteDeadline(now.Add(errorWriteGrace))
}

// errorWriteGrace is how long an aborted exchange may take to write its answer.
const errorWriteGrace = time.Second

// stop ends the guard; after it returns the guard touches nothing.
func (g *idleGuard) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	g.timer.Stop()
	g.cancel(nil)
}
