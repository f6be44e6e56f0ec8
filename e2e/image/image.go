// Package image builds the container images the local e2e cluster runs, offline:
// it compiles Go binaries and packs them, with a minimal root filesystem, into
// single-layer image tarballs that `ctr -n k8s.io images import` loads into
// containerd under their tag, so no registry is ever contacted.
package image

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch returns the modification and creation time of everything in an image, so
// that the same inputs always give the same image digest.
func epoch() time.Time { return time.Unix(0, 0).UTC() }

// defaultPath is the PATH set when a Spec's Env does not set one.
const defaultPath = "PATH=/usr/local/bin:/usr/bin:/bin"

// Spec describes a single-layer image made of host files on top of a minimal root
// filesystem (see RootFS).
type Spec struct {
	// Ref is the image's tag, e.g. "ambit.local/echo:dev"; containerd names the
	// imported image by it.
	Ref string
	// Files maps an absolute path in the image to a file on the host. A host file
	// with any executable bit set gets mode 0755 in the image, any other 0644.
	Files map[string]string
	// Entrypoint is the image's ENTRYPOINT.
	Entrypoint []string
	// Cmd is the image's CMD: the default arguments to Entrypoint.
	Cmd []string
	// Env holds KEY=value pairs; PATH defaults to /usr/local/bin:/usr/bin:/bin.
	Env []string
}

// entry is one file or directory of the image's layer.
type entry struct {
	path string // absolute, cleaned
	mode int64
	dir  bool
	data []byte // content of a generated file
	host string // host file to copy, if data is nil
}

// RootFS returns the files every image gets so Go binaries behave as in a
// distribution image: users root and nobody, name resolution through
// /etc/hosts before DNS, and a world-writable /tmp.
func RootFS() map[string]string {
	return map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
		"/etc/group":         "root:x:0:\nnobody:x:65534:\n",
		"/etc/nsswitch.conf": "hosts: files dns\n",
	}
}

// Write builds the image spec describes and writes it to tarPath as a docker
// archive (the `docker save` format, which containerd imports with the tag in
// spec.Ref). The file is replaced atomically.
func Write(spec Spec, tarPath string) error {
	tag, err := name.NewTag(spec.Ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image ref %q: %w", spec.Ref, err)
	}
	entries, err := layout(spec.Files)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}

	layerPath := tarPath + ".layer.tmp"
	defer os.Remove(layerPath)
	if err := writeLayer(entries, layerPath); err != nil {
		return fmt.Errorf("image %s: layer: %w", spec.Ref, err)
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return fmt.Errorf("image %s: layer: %w", spec.Ref, err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch()}, CreatedBy: "ambit e2e/image"},
	})
	if err != nil {
		return fmt.Errorf("image %s: add layer: %w", spec.Ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image %s: config: %w", spec.Ref, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: epoch()}
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Config = v1.Config{
		Entrypoint: spec.Entrypoint,
		Cmd:        spec.Cmd,
		Env:        withDefaultPath(spec.Env),
		WorkingDir: "/",
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return fmt.Errorf("image %s: config: %w", spec.Ref, err)
	}

	tmp := tarPath + ".tmp"
	defer os.Remove(tmp)
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("image %s: write %s: %w", spec.Ref, tarPath, err)
	}
	if err := os.Rename(tmp, tarPath); err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	return nil
}

func withDefaultPath(env []string) []string {
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
		return env
	}
	return append([]string{defaultPath}, env...)
}

// layout returns the sorted entries of the layer: the root filesystem, the
// given files, and every parent directory.
func layout(files map[string]string) ([]entry, error) {
	byPath := map[string]entry{
		"/tmp":  {path: "/tmp", dir: true, mode: 0o1777},
		"/root": {path: "/root", dir: true, mode: 0o700},
	}
	for p, content := range RootFS() {
		byPath[p] = entry{path: p, mode: 0o644, data: []byte(content)}
	}
	for p, host := range files {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, fmt.Errorf("file path %q in image must be absolute and clean", p)
		}
		fi, err := os.Stat(host)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("file %s: %s is not a regular file", p, host)
		}
		mode := int64(0o644)
		if fi.Mode().Perm()&0o111 != 0 {
			mode = 0o755
		}
		byPath[p] = entry{path: p, mode: mode, host: host}
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if e, ok := byPath[d]; ok && !e.dir {
				return nil, fmt.Errorf("%s is both a file and the parent of %s", d, p)
			}
			if _, ok := byPath[d]; !ok {
				byPath[d] = entry{path: d, dir: true, mode: 0o755}
			}
		}
	}
	entries := make([]entry, 0, len(byPath))
	for _, e := range byPath {
		entries = append(entries, e)
	}
	// Sorting by path puts each directory before its contents.
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.path, b.path) })
	return entries, nil
}

// writeLayer writes entries as a gzipped tar to dst, with fixed owners and times
// so the same entries always give the same bytes.
func writeLayer(entries []entry, dst string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return errors.Join(tw.Close(), zw.Close())
}

func writeEntry(tw *tar.Writer, e entry) error {
	hdr := &tar.Header{
		Name:    strings.TrimPrefix(e.path, "/"),
		Mode:    e.mode,
		ModTime: epoch(),
		Format:  tar.FormatPAX,
	}
	if e.dir {
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		return tw.WriteHeader(hdr)
	}
	hdr.Typeflag = tar.TypeReg
	if e.data != nil {
		hdr.Size = int64(len(e.data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	src, err := os.Open(e.host)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, src); err != nil {
		return fmt.Errorf("copy %s: %w", filepath.Base(e.host), err)
	}
	return nil
}
