package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ambit-mesh/ambit/e2e/image"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// privConfig is a cluster configuration that cannot collide with a cluster a developer
// has up (`make up` uses prefix "ambit" and port 6443).
func privConfig(t *testing.T) Config {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig(root)
	c.StateDir = filepath.Join(t.TempDir(), "state")
	c.Prefix = fmt.Sprintf("at%d", os.Getpid()%100000)
	c.APIPort = freePort(t)
	c.Helper = testHelper
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// noImages fails the test if Up gets as far as building images.
func noImages(t *testing.T) ImageBuilder {
	return func(context.Context) ([]string, error) {
		t.Error("Up went on to build images; it should have stopped at preflight")
		return nil, errors.New("unexpected")
	}
}

// assertNothingCreated checks that a refused Up left no trace.
func assertNothingCreated(t *testing.T, c Config, except ...string) {
	t.Helper()
	if _, err := os.Stat(c.StateDir); err == nil {
		t.Errorf("state dir %s exists after a refused up", c.StateDir)
	}
	for _, ns := range append([]string{c.cpNetns()}, c.nodeNetnsNames()...) {
		if netnsExists(ns) && !contains(except, ns) {
			t.Errorf("network namespace %s exists after a refused up", ns)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func TestPrivilegedUpReportsMissingDependencies(t *testing.T) {
	privtest.Require(t)
	c := privConfig(t)
	t.Setenv("PATH", t.TempDir()) // nothing is installed
	err := Up(context.Background(), c, noImages(t), testLogger(t))
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("Up with an empty PATH = %v, want ErrPreflight", err)
	}
	for _, want := range []string{
		"missing etcd: apt-get install etcd-server",
		"missing containerd: apt-get install containerd",
		"missing runc: apt-get install runc",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	assertNothingCreated(t, c)
}

func TestPrivilegedUpRefusesNetnsClash(t *testing.T) {
	privtest.Require(t)
	c := privConfig(t)
	clash := c.node(2).Netns
	if out, err := exec.Command("ip", "netns", "add", clash).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", clash).Run() })
	err := Up(context.Background(), c, noImages(t), testLogger(t))
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), fmt.Sprintf("network namespace %q already exists", clash)) {
		t.Fatalf("Up with %s taken = %v, want a preflight error naming it", clash, err)
	}
	assertNothingCreated(t, c, clash)
}

func TestPrivilegedUpRefusesPortClash(t *testing.T) {
	privtest.Require(t)
	c := privConfig(t)
	ln, err := net.Listen("tcp", c.apiListen())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Up(context.Background(), c, noImages(t), testLogger(t))
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "cannot listen on "+c.apiListen()) {
		t.Fatalf("Up with %s taken = %v, want a preflight error naming it", c.apiListen(), err)
	}
	assertNothingCreated(t, c)
}

// TestPrivilegedUpIsIdempotentAndDownLeavesNothing brings a second, private cluster
// up, checks a second Up leaves it alone, then checks Down removes every namespace,
// cgroup, mount, process and file.
func TestPrivilegedUpIsIdempotentAndDownLeavesNothing(t *testing.T) {
	privtest.Require(t)
	if testing.Short() {
		t.Skip("brings up a whole cluster; not in -short")
	}
	c := privConfig(t)
	log := testLogger(t)
	ctx := context.Background()
	images := func(ctx context.Context) ([]string, error) {
		built, err := image.BuildAll(ctx, c.RepoRoot, filepath.Join(c.CacheDir, "images"), log)
		var tars []string
		for _, b := range built {
			tars = append(tars, b.TarPath)
		}
		return tars, err
	}
	t.Cleanup(func() { _ = Down(context.WithoutCancel(ctx), c, log, false) })
	if err := Up(ctx, c, images, log); err != nil {
		t.Fatalf("up: %v", err)
	}
	pids := map[string]pidRecord{}
	for _, d := range c.daemonNames() {
		r, ok := c.running(d)
		if !ok {
			t.Fatalf("%s not running after up", d)
		}
		pids[d] = r
	}
	nodePids := map[int]bool{}
	for _, n := range c.nodes() {
		for _, cg := range []string{n.Cgroup, n.sysCgroup()} {
			ps, err := cgroupPids(cg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				nodePids[p] = true
			}
		}
	}
	if err := Up(ctx, c, images, log); err != nil {
		t.Fatalf("second up: %v", err)
	}
	for _, d := range c.daemonNames() {
		if r, _ := c.running(d); r != pids[d] {
			t.Errorf("second up replaced %s: %v -> %v", d, pids[d], r)
		}
	}

	if err := Down(ctx, c, log, false); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, ns := range append([]string{c.cpNetns()}, c.nodeNetnsNames()...) {
		if netnsExists(ns) {
			t.Errorf("network namespace %s left after down", ns)
		}
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		ents, _ := os.ReadDir(h)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), c.Prefix+"-") {
				t.Errorf("cgroup %s left after down", filepath.Join(h, e.Name()))
			}
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), c.StateDir) {
		t.Errorf("mounts under %s left after down", c.StateDir)
	}
	for d, r := range pids {
		if st, err := procStart(r.Pid); err == nil && st == r.Start {
			t.Errorf("%s (pid %d) still runs after down", d, r.Pid)
		}
	}
	for p := range nodePids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err == nil && !isZombie(p) {
			t.Errorf("node process %d still runs after down", p)
		}
	}
	if _, err := os.Stat(c.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s left after down (err %v)", c.StateDir, err)
	}
	if err := Down(ctx, c, log, false); err != nil {
		t.Errorf("second down: %v", err)
	}
}
