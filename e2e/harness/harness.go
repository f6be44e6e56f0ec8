// Package harness runs end-to-end tests against the local cluster: it brings the
// cluster up once per test binary (or reuses a running one), gives each test a
// throwaway namespace, waits with explicit timeouts, and on failure dumps the state a
// person needs to see why (pods, events, logs).
package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/e2e/cluster"
	"github.com/ambit-mesh/ambit/e2e/image"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// EnvKeep keeps a cluster the tests brought up running after they finish.
const EnvKeep = "AMBIT_KEEP_CLUSTER"

// Cluster is a running local cluster the tests drive with its own kubectl.
type Cluster struct {
	Config     cluster.Config
	Kubeconfig string
	kubectl    string
}

// Main is TestMain for e2e packages: it starts (or reuses) the cluster, runs the tests,
// and stops the cluster if it started it. Without root it skips every test and says
// why, unless AMBIT_REQUIRE_PRIVILEGED=1 makes that a failure.
func Main(m *testing.M, c **Cluster) {
	os.Exit(runMain(m, c))
}

func runMain(m *testing.M, out **Cluster) int {
	if p := privtest.Problem(); p != "" {
		if privtest.Required() {
			fmt.Fprintf(os.Stderr, "e2e: cannot run: %s (%s=1)\n", p, privtest.EnvRequire)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: SKIPPING all end-to-end tests: %s; run `make test` as root\n", p)
		return 0
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := cluster.DefaultConfig(root)
	ctx := context.Background()
	if cfg.Helper, err = cluster.BuildHelper(ctx, root, filepath.Join(root, "bin")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	reused := cfg.Healthy()
	if reused {
		log.Info("e2e: reusing the running cluster", "kubeconfig", cfg.Kubeconfig())
	} else {
		images := func(ctx context.Context) ([]string, error) {
			built, err := image.BuildAll(ctx, root, filepath.Join(cfg.CacheDir, "images"), log)
			if err != nil {
				return nil, err
			}
			var tars []string
			for _, b := range built {
				tars = append(tars, b.TarPath)
			}
			return tars, nil
		}
		if err := cluster.Up(ctx, cfg, images, log); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: cluster up:", err)
			return 1
		}
	}
	*out = &Cluster{Config: cfg, Kubeconfig: cfg.Kubeconfig(), kubectl: cfg.Kubectl()}
	code := m.Run()
	if code != 0 {
		dumpComponentLogs(cfg.LogDir())
	}
	if !reused && os.Getenv(EnvKeep) != "1" {
		if err := cluster.Down(ctx, cfg, log, code != 0); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: cluster down:", err)
			return 1
		}
	}
	return code
}

// repoRoot finds the checkout from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/ambit-mesh/ambit\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the ambit checkout above the working directory")
		}
		dir = parent
	}
}

// Kubectl runs kubectl against the cluster and returns its stdout.
func (c *Cluster) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// KubectlCommand returns an unstarted kubectl command, for long-running uses such as
// port-forward.
func (c *Cluster) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// Namespace is a throwaway namespace for one test, deleted when the test ends.
type Namespace struct {
	Name string
	c    *Cluster
	t    testing.TB
}

// NewNamespace creates a namespace named after the test, registers its deletion, and
// registers a dump of its state if the test fails.
func (c *Cluster) NewNamespace(t testing.TB) *Namespace {
	t.Helper()
	name := namespaceName(t.Name())
	ctx := context.Background()
	if _, err := c.Kubectl(ctx, "", "create", "namespace", name); err != nil {
		t.Fatal(err)
	}
	ns := &Namespace{Name: name, c: c, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			ns.dump()
		}
		if _, err := c.Kubectl(ctx, "", "delete", "namespace", name, "--wait=false"); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	return ns
}

// namespaceName turns a test name into a DNS label unique enough for one run.
func namespaceName(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("%s-%d", strings.TrimRight(s, "-"), time.Now().UnixMilli()%100000)
}

// Kubectl runs kubectl in the namespace, failing the test on error.
func (n *Namespace) Kubectl(args ...string) string {
	n.t.Helper()
	out, err := n.c.Kubectl(context.Background(), "", append([]string{"-n", n.Name}, args...)...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// Apply applies a manifest into the namespace.
func (n *Namespace) Apply(manifest string) {
	n.t.Helper()
	if _, err := n.c.Kubectl(context.Background(), manifest, "-n", n.Name, "apply", "-f", "-"); err != nil {
		n.t.Fatal(err)
	}
}

// Wait runs `kubectl wait` in the namespace with the given timeout.
func (n *Namespace) Wait(timeout time.Duration, args ...string) {
	n.t.Helper()
	n.Kubectl(append([]string{"wait", "--timeout=" + timeout.String()}, args...)...)
}

// Eventually calls f until it returns nil or timeout passes, then fails with f's last
// error.
func (n *Namespace) Eventually(timeout time.Duration, what string, f func() error) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dump logs the namespace's pods, events and container logs.
func (n *Namespace) dump() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "pods,services,endpointslices,deployments", "-o", "wide"},
		{"get", "events", "--sort-by=.lastTimestamp"},
		{"logs", "--all-containers", "--prefix", "--tail=50", "-l", "dump-logs!=false"},
	} {
		out, err := n.c.Kubectl(ctx, "", append([]string{"-n", n.Name}, args...)...)
		n.t.Logf("dump: kubectl %s\n%s%v", strings.Join(args, " "), out, errOrEmpty(err))
	}
	out, _ := n.c.Kubectl(ctx, "", "get", "nodes", "-o", "wide")
	n.t.Logf("dump: nodes\n%s", out)
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// dumpComponentLogs prints the end of every cluster process's log, so a failure in CI
// shows what kubelet, containerd or the API server said.
func dumpComponentLogs(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Fprintf(os.Stderr, "=== %s (last %d lines)\n%s\n", f, len(lines), strings.Join(lines, "\n"))
	}
}

// PodNetnsPath finds the network namespace of a running pod from the host: every
// container process of the pod sits in a cgroup whose path names the pod UID.
func PodNetnsPath(uid string) (string, error) {
	var found string
	want := "pod" + uid
	// Cgroups come and go while we walk: a directory that vanished is skipped.
	err := filepath.WalkDir("/sys/fs/cgroup/pids", func(p string, d os.DirEntry, walkErr error) error {
		if walkErr != nil || found != "" || !d.IsDir() || !strings.Contains(p, want) {
			return nil //nolint:nilerr // see above
		}
		b, readErr := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if readErr != nil {
			return nil //nolint:nilerr // see above
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			found = "/proc/" + f[0] + "/ns/net"
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("no process of pod %s found in the pids cgroup hierarchy", uid)
	}
	return found, nil
}
