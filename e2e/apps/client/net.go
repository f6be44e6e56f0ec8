package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

func tcpCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tcp", flag.ContinueOnError)
	msg := fs.String("msg", "hello", "message to send")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of the whole exchange")
	pos, err := parseFlags(fs, args, 1, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, err := roundTrip(ctx, pos[0], *msg)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, reply)
	return err
}

// roundTrip sends msg to addr, half-closes, and returns all the peer sent back
// before closing. An empty reply to a non-empty message is an error: that is
// how a proxy that accepted and then refused the connection looks.
func roundTrip(ctx context.Context, addr, msg string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// Past the deadline, unblock whatever I/O is pending.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	if _, err := io.WriteString(c, msg); err != nil {
		return "", fmt.Errorf("send to %s: %w", addr, err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", fmt.Errorf("half-close %s: %w", addr, err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("read from %s after %d bytes: %w", addr, len(reply), err)
	}
	if len(reply) == 0 && msg != "" {
		return "", errors.New("connection to " + addr + " closed without a reply")
	}
	return string(reply), nil
}

func dnsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of the lookup")
	pos, err := parseFlags(fs, args, 1, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	addrs, err := lookup(ctx, pos[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if _, err := fmt.Fprintln(stdout, a); err != nil {
			return err
		}
	}
	return nil
}

// lookup resolves name with Go's resolver (which reads /etc/hosts and
// /etc/resolv.conf as the pod sees them) and returns its addresses sorted.
func lookup(ctx context.Context, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(ctx, name)
	if err != nil {
		return nil, err
	}
	slices.Sort(addrs)
	return addrs, nil
}
