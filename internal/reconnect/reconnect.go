// Package reconnect keeps a long-lived session (an xDS stream, the node-agent
// connection) going: when it ends it is started again after a backoff that doubles
// between lo and hi and starts over once a session has lasted longer than hi.
package reconnect

import (
	"context"
	"time"
)

// Loop runs session until ctx ends, restarting it whenever it returns. ended is told
// each failure and the backoff before the next attempt (to log it). Loop returns nil
// once ctx ends: stopping is not an error.
func Loop(ctx context.Context, lo, hi time.Duration, session func(context.Context) error,
	ended func(err error, backoff time.Duration)) error {
	var backoff time.Duration
	for {
		start := time.Now()
		err := session(ctx)
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the session ended because we are stopping
		}
		if time.Since(start) > hi {
			backoff = 0 // it worked for a while: this is a fresh failure
		}
		backoff = min(max(2*backoff, lo), hi)
		ended(err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
