// Package install puts the ambit-cni plugin on a node: it copies the binary into the
// CNI bin directory and appends the plugin to the node's conflist (the file the
// container runtime reads: the first *.conflist in lexical order), and takes both away
// again on uninstall. Every write is atomic (temp file + rename) and idempotent.
package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// PluginType is the "type" of Ambit's entry in the conflist.
const PluginType = "ambit-cni"

// Installer installs the plugin on one node.
type Installer struct {
	// Binary is the plugin binary to copy (in the agent image).
	Binary string
	// BinDir is the node's CNI plugin directory (/opt/cni/bin, mounted).
	BinDir string
	// ConfDir is the node's CNI config directory (/etc/cni/net.d, mounted).
	ConfDir string
	// Entry is the plugin's conflist entry, without "type" (added here).
	Entry map[string]any
	// Interval between checks that the conflist still holds the entry.
	Interval time.Duration
	Log      *slog.Logger
}

// Run installs, then re-checks every Interval (another installer may rewrite the
// conflist) until ctx ends. It does not uninstall: a restarting agent must leave the
// plugin in place so ambient pods keep failing closed while it is away.
func (in Installer) Run(ctx context.Context) error {
	if err := in.Install(); err != nil {
		return err
	}
	t := time.NewTicker(in.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := in.Install(); err != nil {
				in.Log.Warn("re-install CNI plugin", "err", err)
			}
		}
	}
}

// Install copies the binary (if it differs) and inserts the entry into the conflist.
func (in Installer) Install() error {
	if err := copyIfChanged(in.Binary, filepath.Join(in.BinDir, PluginType)); err != nil {
		return fmt.Errorf("install plugin binary: %w", err)
	}
	path, err := Conflist(in.ConfDir)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read conflist: %w", err)
	}
	updated, err := InsertPlugin(old, in.Entry)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if bytes.Equal(old, updated) {
		return nil
	}
	in.Log.Info("added ambit-cni to the CNI chain", "conflist", path)
	return writeAtomic(path, updated, 0o644)
}

// Uninstall removes the entry from the conflist, then the binary.
func (in Installer) Uninstall() error {
	var errs []error
	if path, err := Conflist(in.ConfDir); err == nil {
		old, err := os.ReadFile(path)
		if err == nil {
			var updated []byte
			updated, err = RemovePlugin(old)
			if err == nil && !bytes.Equal(old, updated) {
				err = writeAtomic(path, updated, 0o644)
				in.Log.Info("removed ambit-cni from the CNI chain", "conflist", path)
			}
		}
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(in.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Conflist returns the conflist the runtime uses in dir: the first *.conflist by name.
func Conflist(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("list CNI configs: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conflist") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no .conflist in %s: the primary CNI plugin is not installed yet", dir)
	}
	sort.Strings(names)
	return filepath.Join(dir, names[0]), nil
}

// InsertPlugin returns conflist with entry (plus "type": "ambit-cni") as the last
// plugin, replacing an earlier Ambit entry; everything else is kept. The output is
// indented JSON; inserting twice gives the same bytes.
func InsertPlugin(conflist []byte, entry map[string]any) ([]byte, error) {
	doc, plugins, err := parse(conflist)
	if err != nil {
		return nil, err
	}
	plugins = slices.DeleteFunc(plugins, isOurs)
	e := map[string]any{}
	for k, v := range entry {
		e[k] = v
	}
	e["type"] = PluginType
	doc["plugins"] = append(plugins, e)
	return render(doc)
}

// RemovePlugin returns conflist without Ambit's entry.
func RemovePlugin(conflist []byte) ([]byte, error) {
	doc, plugins, err := parse(conflist)
	if err != nil {
		return nil, err
	}
	doc["plugins"] = slices.DeleteFunc(plugins, isOurs)
	return render(doc)
}

func isOurs(p any) bool {
	m, ok := p.(map[string]any)
	return ok && m["type"] == PluginType
}

func parse(conflist []byte) (map[string]any, []any, error) {
	var doc map[string]any
	if err := json.Unmarshal(conflist, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse conflist: %w", err)
	}
	plugins, ok := doc["plugins"].([]any)
	if !ok {
		return nil, nil, errors.New("conflist has no plugins list")
	}
	return doc, plugins, nil
}

func render(doc map[string]any) ([]byte, error) {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func copyIfChanged(src, dst string) error {
	want, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		return nil
	}
	return writeAtomic(dst, want, 0o755)
}

// writeAtomic replaces path with data so readers see the old or the new file, never
// a partial one (the runtime may exec the plugin or read the conflist at any time).
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
