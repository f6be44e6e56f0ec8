package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// hostFile writes content to a new file in dir with mode and returns its path.
func hostFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// layerFile is what a test checks of one entry in an image's filesystem.
type layerFile struct {
	Mode    int64
	Dir     bool
	Content string
}

// readImage loads the image tagged ref from tarPath and returns it with its
// flattened filesystem.
func readImage(t *testing.T, tarPath, ref string) (v1.Image, map[string]layerFile) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatalf("read %s as %s: %v", tarPath, ref, err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(epoch()) {
			t.Errorf("%s: owner %d:%d time %v, want 0:0 at %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime, epoch())
		}
		p := "/" + strings.TrimSuffix(hdr.Name, "/")
		files[p] = layerFile{Mode: hdr.Mode, Dir: hdr.Typeflag == tar.TypeDir, Content: string(data)}
	}
	return img, files
}

func TestWriteMakesImportableImage(t *testing.T) {
	dir := t.TempDir()
	bin := hostFile(t, dir, "server", "\x7fELF fake binary", 0o700)
	conf := hostFile(t, dir, "conf", "key: value\n", 0o600)
	spec := Spec{
		Ref:        "ambit.local/echo:dev",
		Files:      map[string]string{"/usr/local/bin/echo": bin, "/etc/echo/conf.yaml": conf},
		Entrypoint: []string{"/usr/local/bin/echo"},
		Cmd:        []string{"-v"},
		Env:        []string{"MODE=test"},
	}
	tarPath := filepath.Join(dir, "echo.tar")
	if err := Write(spec, tarPath); err != nil {
		t.Fatal(err)
	}

	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{"ambit.local/echo:dev"}) {
		t.Fatalf("manifest.json = %+v, want one image tagged ambit.local/echo:dev", manifest)
	}

	img, files := readImage(t, tarPath, spec.Ref)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if !cfg.Created.Equal(epoch()) {
		t.Errorf("created = %v, want %v", cfg.Created, epoch())
	}
	wantCfg := v1.Config{
		Entrypoint: []string{"/usr/local/bin/echo"},
		Cmd:        []string{"-v"},
		Env:        []string{defaultPath, "MODE=test"},
		WorkingDir: "/",
	}
	if diff := cmp.Diff(wantCfg, cfg.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if layers, _ := img.Layers(); len(layers) != 1 {
		t.Errorf("image has %d layers, want 1", len(layers))
	}

	want := map[string]layerFile{
		"/usr/local/bin/echo": {Mode: 0o755, Content: "\x7fELF fake binary"},
		"/etc/echo/conf.yaml": {Mode: 0o644, Content: "key: value\n"},
		"/etc/nsswitch.conf":  {Mode: 0o644, Content: "hosts: files dns\n"},
		"/tmp":                {Mode: 0o1777, Dir: true},
		"/usr":                {Mode: 0o755, Dir: true},
		"/usr/local":          {Mode: 0o755, Dir: true},
		"/usr/local/bin":      {Mode: 0o755, Dir: true},
		"/etc/echo":           {Mode: 0o755, Dir: true},
	}
	for p, w := range want {
		if diff := cmp.Diff(w, files[p]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
	for _, line := range []string{"root:x:0:0:", "nobody:x:65534:65534:"} {
		if !strings.Contains(files["/etc/passwd"].Content, line) {
			t.Errorf("/etc/passwd lacks %q:\n%s", line, files["/etc/passwd"].Content)
		}
	}
	for _, line := range []string{"root:x:0:", "nobody:x:65534:"} {
		if !strings.Contains(files["/etc/group"].Content, line) {
			t.Errorf("/etc/group lacks %q", line)
		}
	}
}

func TestWriteIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := hostFile(t, dir, "bin", "binary", 0o755)
	spec := Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/x": bin}, Entrypoint: []string{"/x"}}
	var tars [][]byte
	for _, name := range []string{"a.tar", "b.tar"} {
		p := filepath.Join(dir, name)
		if err := Write(spec, p); err != nil {
			t.Fatal(err)
		}
		// A newer mtime on the host must not change the image.
		if err := os.Chtimes(bin, epoch(), epoch()); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, data)
	}
	if !bytes.Equal(tars[0], tars[1]) {
		t.Error("writing the same spec twice gave different tarballs")
	}
}

func TestWriteRejectsBadSpec(t *testing.T) {
	dir := t.TempDir()
	bin := hostFile(t, dir, "bin", "binary", 0o755)
	tests := []struct {
		name string
		spec Spec
	}{
		{name: "bad ref", spec: Spec{Ref: "Ambit Local/x"}},
		{name: "relative path", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"x": bin}}},
		{name: "unclean path", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/a/../x": bin}}},
		{name: "missing host file", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/x": filepath.Join(dir, "none")}}},
		{name: "host directory", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/x": dir}}},
		{name: "file as parent", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/a": bin, "/a/b": bin}}},
		{name: "root file as parent", spec: Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/etc/passwd/x": bin}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tarPath := filepath.Join(dir, "out.tar")
			if err := Write(tt.spec, tarPath); err == nil {
				t.Fatal("Write succeeded, want an error")
			}
			if _, err := os.Stat(tarPath); !os.IsNotExist(err) {
				t.Errorf("failed Write left %s behind (stat: %v)", tarPath, err)
			}
		})
	}
}

func TestWithDefaultPath(t *testing.T) {
	tests := []struct {
		env, want []string
	}{
		{env: nil, want: []string{defaultPath}},
		{env: []string{"A=1"}, want: []string{defaultPath, "A=1"}},
		{env: []string{"A=1", "PATH=/bin"}, want: []string{"A=1", "PATH=/bin"}},
	}
	for _, tt := range tests {
		if got := withDefaultPath(tt.env); !slices.Equal(got, tt.want) {
			t.Errorf("withDefaultPath(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}
