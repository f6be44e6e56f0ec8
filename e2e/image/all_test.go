package image

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCommandsFindsImageMainPackages(t *testing.T) {
	cmdDir := t.TempDir()
	for dir, src := range map[string]string{
		"ztunnel/main.go":       "package main\nfunc main() {}\n",
		"waypoint/main.go":      "package main\nfunc main() {}\n",
		"ambit-cluster/main.go": "package main\nfunc main() {}\n", // host tool
		"kubectl-ambit/main.go": "package main\nfunc main() {}\n", // host tool
		"lib/lib.go":            "package lib\n",
		"empty/README.md":       "nothing yet\n",
		"file.go":               "package cmd\n",
	} {
		p := filepath.Join(cmdDir, dir)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := commands(cmdDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"waypoint", "ztunnel"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if got, err := commands(filepath.Join(cmdDir, "none")); err != nil || got != nil {
		t.Errorf("commands of a missing dir = %q, %v; want none", got, err)
	}
}

func TestTargetsNameImages(t *testing.T) {
	ts, err := targets([]string{"ambit-cni", "ambit-cni-node", "ztunnel"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Spec{}
	for _, tt := range ts {
		got[tt.name] = tt.spec("/bin")
	}
	want := map[string]Spec{
		"pause":     {Ref: "ambit.local/pause:3.10", Files: map[string]string{"/pause": "/bin/pause"}, Entrypoint: []string{"/pause"}},
		"coredns":   {Ref: "ambit.local/coredns:dev", Files: map[string]string{"/coredns": "/bin/coredns"}, Entrypoint: []string{"/coredns"}},
		"echo":      {Ref: "ambit.local/echo:dev", Files: map[string]string{"/usr/local/bin/echo": "/bin/echo"}, Entrypoint: []string{"/usr/local/bin/echo"}},
		"client":    {Ref: "ambit.local/client:dev", Files: map[string]string{"/usr/local/bin/client": "/bin/client"}, Entrypoint: []string{"/usr/local/bin/client"}, Cmd: []string{"sleep"}},
		"ambit-cni": {Ref: "ambit.local/ambit-cni:dev", Files: map[string]string{"/usr/local/bin/ambit-cni": "/bin/ambit-cni"}, Entrypoint: []string{"/usr/local/bin/ambit-cni"}},
		"ambit-cni-node": {
			Ref: "ambit.local/ambit-cni-node:dev",
			Files: map[string]string{
				"/usr/local/bin/ambit-cni-node": "/bin/ambit-cni-node",
				"/usr/local/bin/ambit-cni":      "/bin/ambit-cni",
			},
			Entrypoint: []string{"/usr/local/bin/ambit-cni-node"},
		},
		"ztunnel": {Ref: "ambit.local/ztunnel:dev", Files: map[string]string{"/usr/local/bin/ztunnel": "/bin/ztunnel"}, Entrypoint: []string{"/usr/local/bin/ztunnel"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
}

func TestTargetsRejectsClashingCommand(t *testing.T) {
	if _, err := targets([]string{"echo"}); err == nil {
		t.Fatal("a cmd/echo clashing with the echo app was accepted")
	}
}

func TestWriteCachedRewritesOnlyChangedInputs(t *testing.T) {
	dir := t.TempDir()
	bin := hostFile(t, dir, "bin", "v1", 0o755)
	tarPath := filepath.Join(dir, "x.tar")
	spec := Spec{Ref: "ambit.local/x:dev", Files: map[string]string{"/x": bin}, Entrypoint: []string{"/x"}}
	steps := []struct {
		name       string
		change     func()
		wantCached bool
	}{
		{name: "first write", change: func() {}, wantCached: false},
		{name: "unchanged", change: func() {}, wantCached: true},
		{name: "binary changed", change: func() { hostFile(t, dir, "bin", "v2", 0o755) }, wantCached: false},
		{name: "spec changed", change: func() { spec.Env = []string{"A=1"} }, wantCached: false},
		{name: "tarball removed", change: func() { os.Remove(tarPath) }, wantCached: false},
		{name: "unchanged again", change: func() {}, wantCached: true},
	}
	for _, s := range steps {
		s.change()
		cached, err := writeCached(spec, tarPath)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if cached != s.wantCached {
			t.Errorf("%s: cached = %v, want %v", s.name, cached, s.wantCached)
		}
	}
	_, files := readImage(t, tarPath, spec.Ref)
	if got := files["/x"].Content; got != "v2" {
		t.Errorf("cached image holds %q, want the latest binary v2", got)
	}
}

func TestBuildGoMakesStaticBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles Go packages; skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command in PATH")
	}
	out := t.TempDir()
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if err := BuildGo(context.Background(), repoRoot, out, "./e2e/apps/pause"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(out, "pause")
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not executable: %v", bin, fi.Mode())
	}
	// A static binary names no program interpreter (dynamic loader).
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s links dynamically", bin)
		}
	}

	err = BuildGo(context.Background(), repoRoot, out, "./e2e/apps/nonexistent")
	if err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("building a missing package: err = %v, want it named", err)
	}
}
