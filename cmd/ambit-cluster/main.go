// Command ambit-cluster runs the local Kubernetes cluster Ambit is tried and tested on:
// `up`, `down`, `status`, `images` and `load-image`. See docs/local-cluster.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/image"
	"github.com/ambit-mesh/ambit/internal/shutdown"
)

const usage = `usage: ambit-cluster [flags] up|down|status|images|load-image TAR

  up          build what is missing, start the cluster, install manifests/ and the sample app
  down        stop the cluster and remove everything it created
  status      show the cluster's processes and nodes
  prepare     build the Kubernetes binaries and images (no cluster)
  images      build every image and import it into the running cluster's nodes
  load-image  import an image tarball into every node

flags:
`

func main() {
	args := os.Args[1:]
	// Hidden subcommands the cluster runs itself; they must not touch anything else.
	switch {
	case cluster.ExecInCgroupsCommand(args):
		if err := cluster.ExecInCgroups(args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	case cluster.NodeInitCommand(args):
		if err := cluster.NodeInit(args); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The first signal drains; a second one exits at once.
	ctx, stop := shutdown.Context(context.Background())
	defer stop()
	if cluster.ForwardCommand(args) {
		if err := cluster.RunForward(ctx, args, log); err != nil {
			log.Error("forward", "err", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, args, log); err != nil {
		fmt.Fprintln(os.Stderr, "ambit-cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	def := cluster.DefaultConfig(wd)
	fs := flag.NewFlagSet("ambit-cluster", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	cfg := def
	fs.StringVar(&cfg.RepoRoot, "repo", def.RepoRoot, "Ambit checkout (manifests/, e2e/kubernetes/)")
	fs.StringVar(&cfg.StateDir, "state", "", "state directory (default <repo>/.ambit)")
	fs.StringVar(&cfg.CacheDir, "cache", def.CacheDir, "build cache outside the repo (env AMBIT_CACHE)")
	fs.IntVar(&cfg.Nodes, "nodes", def.Nodes, "worker nodes")
	fs.IntVar(&cfg.APIPort, "api-port", def.APIPort, "port on 127.0.0.1 forwarding to the API server")
	fs.StringVar(&cfg.Prefix, "prefix", def.Prefix, "prefix of namespace, cgroup and node names")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.RepoRoot, err = filepath.Abs(cfg.RepoRoot); err != nil {
		return err
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(cfg.RepoRoot, ".ambit")
	}
	if cfg.Helper, err = os.Executable(); err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no command")
	}
	images := func(ctx context.Context) ([]string, error) {
		built, err := image.BuildAll(ctx, cfg.RepoRoot, filepath.Join(cfg.CacheDir, "images"), log)
		if err != nil {
			return nil, err
		}
		tars := make([]string, len(built))
		for i, b := range built {
			tars[i] = b.TarPath
		}
		return tars, nil
	}
	switch cmd := fs.Arg(0); cmd {
	case "prepare":
		return cluster.Prepare(ctx, cfg, images, log)
	case "up":
		return cluster.Up(ctx, cfg, images, log)
	case "down":
		return cluster.Down(ctx, cfg, log, false)
	case "status":
		return cluster.Status(ctx, cfg, os.Stdout)
	case "images":
		tars, err := images(ctx)
		if err != nil {
			return err
		}
		if _, ok := cfg.Load(); !ok {
			log.Info("images built; no cluster running to import them into")
			return nil
		}
		for _, t := range tars {
			if err := cluster.LoadImage(ctx, cfg, t); err != nil {
				return err
			}
		}
		log.Info("images imported into every node", "count", len(tars))
		return nil
	case "load-image":
		if fs.NArg() != 2 {
			return errors.New("load-image: want one image tarball")
		}
		return cluster.LoadImage(ctx, cfg, fs.Arg(1))
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}
