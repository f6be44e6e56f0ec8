package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Built is an image tarball written by BuildAll.
type Built struct {
	// Ref is the tag the image is imported under, e.g. "ambit.local/echo:dev".
	Ref string
	// TarPath is the docker archive to pass to `ctr -n k8s.io images import`.
	TarPath string
}

// Image refs of the images that do not come from cmd/.
const (
	PauseRef   = "ambit.local/pause:3.10"
	CoreDNSRef = "ambit.local/coredns:dev"
	EchoRef    = "ambit.local/echo:dev"
	ClientRef  = "ambit.local/client:dev"
)

// binDir is the directory under outDir that holds the compiled binaries.
const binDir = "bin"

// target is one image BuildAll makes from binaries in the bin directory.
type target struct {
	name       string            // base name of the tarball
	ref        string            // image tag
	binaries   map[string]string // path in image -> binary name in the bin directory
	entrypoint []string
	cmd        []string
}

// BuildAll compiles the sample apps (echo, client, pause), CoreDNS and every main
// package under repoRoot/cmd except the host-side tools (ambit-cluster,
// kubectl-ambit), and writes one image tarball per binary into outDir, named
// <name>.tar. Images are tagged ambit.local/<name>:dev, except pause
// (PauseRef). outDir works as a cache: an image whose inputs did not change
// since the last call is not written again. log receives one line per image.
func BuildAll(ctx context.Context, repoRoot, outDir string, log *slog.Logger) ([]Built, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cmds, err := commands(filepath.Join(repoRoot, "cmd"))
	if err != nil {
		return nil, err
	}
	bins := filepath.Join(outDir, binDir)
	pkgs := []string{"./e2e/apps/echo", "./e2e/apps/client", "./e2e/apps/pause"}
	for _, c := range cmds {
		pkgs = append(pkgs, "./cmd/"+c)
	}
	start := time.Now()
	if err := BuildGo(ctx, repoRoot, bins, pkgs...); err != nil {
		return nil, err
	}
	log.Info("compiled go binaries", "count", len(pkgs), "elapsed", since(start))
	start = time.Now()
	if err := BuildCoreDNS(ctx, repoRoot, filepath.Join(bins, "coredns")); err != nil {
		return nil, err
	}
	log.Info("compiled coredns", "elapsed", since(start))

	targets, err := targets(cmds)
	if err != nil {
		return nil, err
	}
	built := make([]Built, 0, len(targets))
	for _, t := range targets {
		start := time.Now()
		tarPath := filepath.Join(outDir, t.name+".tar")
		cached, err := writeCached(t.spec(bins), tarPath)
		if err != nil {
			return nil, err
		}
		log.Info("image", "ref", t.ref, "tar", tarPath, "cached", cached, "elapsed", since(start))
		built = append(built, Built{Ref: t.ref, TarPath: tarPath})
	}
	return built, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// excludedCommands are the binaries under cmd/ that run on the host, not in the
// cluster, and so get no image.
func excludedCommands() []string { return []string{"ambit-cluster", "kubectl-ambit"} }

// companions lists, per command, other commands whose binaries its image also
// carries: the CNI node agent installs the CNI plugin onto the node.
func companions() map[string][]string {
	return map[string][]string{"ambit-cni-node": {"ambit-cni"}}
}

// commands returns the names of the main packages directly under cmdDir that
// get an image, sorted.
func commands(cmdDir string) ([]string, error) {
	dirs, err := os.ReadDir(cmdDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	var names []string
	for _, d := range dirs {
		if !d.IsDir() || slices.Contains(excludedCommands(), d.Name()) {
			continue
		}
		pkg, err := build.ImportDir(filepath.Join(cmdDir, d.Name()), 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list commands: %w", err)
		}
		if pkg.IsCommand() {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

// targets returns the images to make: the fixed ones and one per command.
func targets(cmds []string) ([]target, error) {
	// The client sleeps by default so tests can exec into its pods; pod args
	// replace the Cmd to run one subcommand instead.
	client := binTarget("client", ClientRef)
	client.cmd = []string{"sleep"}
	ts := []target{
		{name: "pause", ref: PauseRef, binaries: map[string]string{"/pause": "pause"}, entrypoint: []string{"/pause"}},
		// CoreDNS sits at / as in the upstream image, so usual manifests work.
		{name: "coredns", ref: CoreDNSRef, binaries: map[string]string{"/coredns": "coredns"}, entrypoint: []string{"/coredns"}},
		binTarget("echo", EchoRef),
		client,
	}
	for _, c := range cmds {
		t := binTarget(c, "ambit.local/"+c+":dev")
		for _, other := range companions()[c] {
			if slices.Contains(cmds, other) {
				t.binaries["/usr/local/bin/"+other] = other
			}
		}
		ts = append(ts, t)
	}
	seen := map[string]bool{}
	for _, t := range ts {
		if seen[t.name] {
			return nil, fmt.Errorf("two images named %q: rename cmd/%s", t.name, t.name)
		}
		seen[t.name] = true
	}
	return ts, nil
}

// binTarget is an image holding one binary in /usr/local/bin as its entrypoint.
func binTarget(bin, ref string) target {
	p := "/usr/local/bin/" + bin
	return target{name: bin, ref: ref, binaries: map[string]string{p: bin}, entrypoint: []string{p}}
}

func (t target) spec(bins string) Spec {
	files := make(map[string]string, len(t.binaries))
	for p, b := range t.binaries {
		files[p] = filepath.Join(bins, b)
	}
	return Spec{Ref: t.ref, Files: files, Entrypoint: t.entrypoint, Cmd: t.cmd}
}

// writeCached writes spec to tarPath unless the digest of its inputs, kept in
// tarPath.sha256, shows the tarball already there was made from the same inputs.
func writeCached(spec Spec, tarPath string) (cached bool, err error) {
	sum, err := inputsDigest(spec)
	if err != nil {
		return false, fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	sumPath := tarPath + ".sha256"
	if old, err := os.ReadFile(sumPath); err == nil && bytes.Equal(old, sum) {
		if _, err := os.Stat(tarPath); err == nil {
			return true, nil
		}
	}
	if err := Write(spec, tarPath); err != nil {
		return false, err
	}
	if err := os.WriteFile(sumPath, sum, 0o644); err != nil {
		return false, fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	return false, nil
}

// layoutVersion changes whenever Write lays out images differently, so that
// cached tarballs made by an older Write are rebuilt.
const layoutVersion = 1

// inputsDigest hashes everything Write reads: the spec, the contents of its
// files, and the root filesystem.
func inputsDigest(spec Spec) ([]byte, error) {
	h := sha256.New()
	// json.Marshal sorts map keys, so equal specs encode alike.
	enc, err := json.Marshal(struct {
		Version int
		Spec    Spec
		RootFS  map[string]string
	}{layoutVersion, spec, RootFS()})
	if err != nil {
		return nil, err
	}
	h.Write(enc)
	paths := make([]string, 0, len(spec.Files))
	for p := range spec.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if err := hashFile(h, spec.Files[p]); err != nil {
			return nil, err
		}
	}
	return []byte(hex.EncodeToString(h.Sum(nil)) + "\n"), nil
}

func hashFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s %t %d\n", path, fi.Mode().Perm()&0o111 != 0, fi.Size())
	_, err = io.Copy(w, f)
	return err
}
