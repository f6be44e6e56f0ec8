package install

import (
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

var entry = map[string]any{"agentSocket": "/var/run/ambit/cni.sock"}

func TestInsertAndRemove(t *testing.T) {
	in, err := os.ReadFile("testdata/bridge.conflist")
	if err != nil {
		t.Fatal(err)
	}
	once, err := InsertPlugin(in, entry)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bridge-with-ambit.conflist.golden", once)
	twice, err := InsertPlugin(once, entry)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(once), string(twice)); diff != "" {
		t.Errorf("inserting twice changed the conflist:\n%s", diff)
	}
	removed, err := RemovePlugin(twice)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bridge-removed.conflist.golden", removed)
	for name, bad := range map[string]string{"not json": "{", "no plugins": `{"name":"x"}`, "plugins not a list": `{"plugins":{}}`} {
		if _, err := InsertPlugin([]byte(bad), entry); err == nil {
			t.Errorf("%s: InsertPlugin accepted it", name)
		}
	}
}

func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(dir, "ambit-cni")
	if err := os.WriteFile(src, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	in := Installer{Binary: src, BinDir: bin, ConfDir: conf, Entry: entry, Log: slog.New(slog.DiscardHandler)}
	if err := in.Install(); err == nil {
		t.Fatal("Install without a conflist succeeded")
	}
	orig, _ := os.ReadFile("testdata/bridge.conflist")
	for name, body := range map[string][]byte{"10-ambit.conflist": orig, "20-other.conflist": []byte(`{"plugins":[]}`)} {
		if err := os.WriteFile(filepath.Join(conf, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := in.Install(); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(filepath.Join(conf, "10-ambit.conflist"))
	golden(t, "bridge-with-ambit.conflist.golden", got)
	if b, err := os.ReadFile(filepath.Join(bin, PluginType)); err != nil || string(b) != "#!binary" {
		t.Errorf("plugin binary: %q, %v", b, err)
	}
	if err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(filepath.Join(conf, "10-ambit.conflist"))
	golden(t, "bridge-removed.conflist.golden", got)
	if _, err := os.Stat(filepath.Join(bin, PluginType)); !os.IsNotExist(err) {
		t.Errorf("plugin binary still there: %v", err)
	}
	other, _ := os.ReadFile(filepath.Join(conf, "20-other.conflist"))
	if string(other) != `{"plugins":[]}` {
		t.Errorf("other conflist touched: %s", other)
	}
	if ents, _ := os.ReadDir(conf); len(ents) != 2 {
		t.Errorf("temp files left: %v", ents)
	}
}
