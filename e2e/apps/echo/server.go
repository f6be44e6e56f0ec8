package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// drainTimeout bounds how long in-flight HTTP requests may take after shutdown starts.
const drainTimeout = 5 * time.Second

// run serves HTTP and TCP echo until ctx is done or one server fails.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	g, ctx := errgroup.WithContext(ctx)
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		log.Info("serving http", "addr", ln.Addr())
		g.Go(func() error { return serveHTTP(ctx, ln, newHandler(cfg)) })
	}
	if cfg.TCPAddr != "" {
		ln, err := net.Listen("tcp", cfg.TCPAddr)
		if err != nil {
			return errors.Join(fmt.Errorf("tcp: %w", err), g.Wait())
		}
		log.Info("serving tcp echo", "addr", ln.Addr())
		g.Go(func() error { return serveEcho(ctx, ln, log) })
	}
	return g.Wait()
}

// serveHTTP serves h on ln until ctx is done, then drains for up to drainTimeout.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	// Serve returned ErrServerClosed as soon as Shutdown started.
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}
