package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// forwardCmd is the hidden subcommand that runs the API server forward as a daemon.
const forwardCmd = "__forward"

// ForwardCommand reports whether args (without the program name) ask for the forward
// daemon; main dispatches them to RunForward.
func ForwardCommand(args []string) bool { return len(args) > 0 && args[0] == forwardCmd }

// RunForward listens on a host address and relays every connection to an address inside
// a network namespace, until ctx ends. It is how kubectl on the host reaches the API
// server without attaching anything to the host's network namespace.
func RunForward(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet(forwardCmd, flag.ContinueOnError)
	listen := fs.String("listen", "", "host address to listen on")
	netns := fs.String("netns", "", "network namespace of the target")
	to := fs.String("to", "", "target address inside the namespace")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *listen == "" || *netns == "" || *to == "" {
		return errors.New("forward: -listen, -netns and -to are required")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	log.Info("forwarding", "listen", *listen, "netns", *netns, "dst", *to)
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		in, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("forward: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(ctx, in, *netns, *to, log)
		}()
	}
}

func relay(ctx context.Context, in net.Conn, netns, to string, log *slog.Logger) {
	defer in.Close()
	out, err := dialInNetns(ctx, netns, to)
	if err != nil {
		log.Warn("forward: dial failed", "dst", to, "err", err)
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}
