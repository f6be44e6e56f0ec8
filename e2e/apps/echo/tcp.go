package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// serveEcho accepts connections on ln until ctx is done and echoes each one's
// bytes back. When the peer half-closes, the echo finishes sending and then
// half-closes too, so `client tcp` sees EOF after the whole echo. On shutdown
// the listener and all open connections are closed and serveEcho waits for
// their goroutines.
func serveEcho(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tcp echo: accept: %w", err)
		}
		mu.Lock()
		if ctx.Err() != nil { // Shutdown already closed the tracked conns.
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if err := echo(c); err != nil && ctx.Err() == nil {
				log.Debug("tcp echo", "src", c.RemoteAddr(), "err", err)
			}
		})
	}
}

// echo copies c's input back to it until EOF, then closes c's write side.
func echo(c net.Conn) error {
	if _, err := io.Copy(c, c); err != nil {
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
