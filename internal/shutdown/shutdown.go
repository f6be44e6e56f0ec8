// Package shutdown gives daemons the same signal handling: the first SIGINT or SIGTERM
// cancels the context (the daemon drains), and a second one ends the process at once.
package shutdown

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Context returns a context cancelled by the first SIGINT or SIGTERM. Once it is
// cancelled the signals get their default action again, so a second signal kills the
// process without waiting for the drain. Call stop to release the signal handler.
func Context(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}
