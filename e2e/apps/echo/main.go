// Command echo is the e2e test server: it answers HTTP on :8080 with a JSON
// description of the request it received (who served it, method, path,
// headers, peer address) and echoes raw TCP bytes on :9000, so tests can see
// what the mesh delivered.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Config is the server's configuration, from flags and the pod's environment.
type Config struct {
	// HTTPAddr is the address the HTTP server listens on.
	HTTPAddr string
	// TCPAddr is the address the TCP echo server listens on.
	TCPAddr string
	// Pod names the server in responses: the POD_NAME environment variable,
	// else the hostname.
	Pod string
	// Namespace is the pod's namespace, from POD_NAMESPACE.
	Namespace string
	// Version labels responses, so tests can tell deployments of one service apart.
	Version string
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Once the first signal cancels ctx, restore the default so a second one exits at once.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("echo failed", "err", err)
		os.Exit(1)
	}
}

func parseConfig(args []string) (Config, error) {
	hostname, _ := os.Hostname()
	cfg := Config{Pod: os.Getenv("POD_NAME"), Namespace: os.Getenv("POD_NAMESPACE")}
	if cfg.Pod == "" {
		cfg.Pod = hostname
	}
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.StringVar(&cfg.HTTPAddr, "http", ":8080", "HTTP listen address")
	fs.StringVar(&cfg.TCPAddr, "tcp", ":9000", "TCP echo listen address")
	fs.StringVar(&cfg.Version, "version", os.Getenv("VERSION"), "version reported in responses (default $VERSION)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.HTTPAddr == "" && cfg.TCPAddr == "" {
		return Config{}, fmt.Errorf("nothing to serve: -http and -tcp are both empty")
	}
	return cfg, nil
}
