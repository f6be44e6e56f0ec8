package image

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// CoreDNSModule is the directory, relative to the repository root, of the tools
// module that pins CoreDNS; its dependencies stay out of the main module.
const CoreDNSModule = "e2e/coredns"

// BuildGo compiles the main packages pkgs (import paths or ./relative patterns)
// of the module in moduleDir into outDir, one static linux binary per package
// named after its last path element. It runs `go` from PATH with CGO_ENABLED=0
// and -trimpath, so the same sources give the same bytes and Go's build cache
// makes an unchanged rebuild cheap.
func BuildGo(ctx context.Context, moduleDir, outDir string, pkgs ...string) error {
	if len(pkgs) == 0 {
		return nil
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	// A trailing separator makes go build write one binary per package into the
	// directory even when there is only one package.
	return goBuild(ctx, moduleDir, outDir+string(filepath.Separator), pkgs)
}

// BuildCoreDNS compiles CoreDNS from the tools module in repoRoot/e2e/coredns
// into the file out. Callers keep out in a cache directory: when the module did
// not change, go build leaves the file as it is.
func BuildCoreDNS(ctx context.Context, repoRoot, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("build coredns: %w", err)
	}
	dir := filepath.Join(repoRoot, filepath.FromSlash(CoreDNSModule))
	if err := goBuild(ctx, dir, out, []string{"github.com/coredns/coredns"}); err != nil {
		return fmt.Errorf("build coredns: %w", err)
	}
	return nil
}

// BuildTags are the images' build tags. grpcnotrace keeps gRPC from importing
// golang.org/x/net/trace, whose html/template makes the linker keep every
// exported method of every type (reflection may call any): ztunnel's binary is
// 25.8 -> 19.6 MB with it, and a process's resident pages of its binary follow.
const BuildTags = "grpcnotrace"

func goBuild(ctx context.Context, dir, out string, pkgs []string) error {
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-tags=" + BuildTags, "-ldflags=-s -w", "-o", out}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", strings.Join(pkgs, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
