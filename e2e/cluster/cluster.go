package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// state is written when Up starts creating things; it tells a later Up or Down what
// exists, even if the flags differ.
type state struct {
	Prefix  string
	Nodes   int
	APIPort int
	Created time.Time
}

func (c Config) stateFile() string { return filepath.Join(c.StateDir, "cluster.json") }

// Load returns c adjusted to the cluster recorded in its state directory, if any.
func (c Config) Load() (Config, bool) {
	b, err := os.ReadFile(c.stateFile())
	if err != nil {
		return c, false
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return c, false
	}
	c.Prefix, c.Nodes, c.APIPort = s.Prefix, s.Nodes, s.APIPort
	return c, true
}

// daemonNames lists every daemon of the cluster, in start order.
func (c Config) daemonNames() []string {
	names := slices.Clone(controlPlaneDaemons)
	for _, n := range c.nodes() {
		for _, d := range []string{"containerd", "kubelet", "kube-proxy"} {
			names = append(names, daemonName(n, d))
		}
	}
	return names
}

// Healthy reports whether every daemon of a recorded cluster is running.
func (c Config) Healthy() bool {
	if _, ok := c.Load(); !ok {
		return false
	}
	for _, d := range c.daemonNames() {
		if _, ok := c.running(d); !ok {
			return false
		}
	}
	return true
}

// ImageBuilder builds the cluster's images (pause, CoreDNS, Ambit, sample apps) as
// tarballs and returns their paths; Up imports them into every node.
type ImageBuilder func(ctx context.Context) ([]string, error)

// Prepare builds what Up needs without starting anything: the Kubernetes binaries
// (minutes the first time) and the images.
func Prepare(ctx context.Context, cfg Config, images ImageBuilder, log *slog.Logger) error {
	if err := cfg.ensureKubeBinaries(ctx, log); err != nil {
		return err
	}
	_, err := images(ctx)
	return err
}

// Up brings the cluster up, or reports the running one. On failure it removes what it
// created, keeping the logs.
func Up(ctx context.Context, cfg Config, images ImageBuilder, log *slog.Logger) (err error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if loaded, ok := cfg.Load(); ok {
		if loaded.Healthy() {
			log.Info("cluster already running", "kubeconfig", loaded.Kubeconfig())
			return nil
		}
		log.Warn("found a cluster that is not fully running; removing it first")
		if err := Down(ctx, loaded, log, false); err != nil {
			return fmt.Errorf("remove stale cluster: %w", err)
		}
	}
	if err := cfg.preflight(); err != nil {
		return err
	}
	if err := cfg.clashes(); err != nil {
		return err
	}
	step := stepper(log, start)
	step("building Kubernetes binaries", "version", KubeVersion, "cache", cfg.kubeBinDir())
	if err := cfg.ensureKubeBinaries(ctx, log); err != nil {
		return err
	}
	step("building images")
	tars, err := images(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(state{Prefix: cfg.Prefix, Nodes: cfg.Nodes, APIPort: cfg.APIPort, Created: time.Now()})
	if err := os.WriteFile(cfg.stateFile(), b, 0o644); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			log.Error("up failed; removing what was created (logs are kept)", "logs", cfg.logDir(), "err", err)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			if derr := Down(cctx, cfg, log, true); derr != nil {
				log.Error("cleanup after failed up", "err", derr)
			}
		}
	}()
	step("writing PKI")
	if err := cfg.writePKI(); err != nil {
		return err
	}
	step("creating network namespaces", "control-plane", cfg.cpNetns(), "nodes", cfg.nodeNetnsNames())
	if err := cfg.setupNetwork(ctx); err != nil {
		return err
	}
	step("starting etcd")
	if err := cfg.startEtcd(ctx); err != nil {
		return err
	}
	step("starting kube-apiserver", "forward", cfg.apiListen())
	if err := cfg.startAPIServer(ctx); err != nil {
		return err
	}
	step("starting kube-controller-manager and kube-scheduler")
	if err := cfg.startControllers(ctx); err != nil {
		return err
	}
	for _, n := range cfg.nodes() {
		step("starting node", "node", n.Name, "ip", n.IP, "pod-cidr", n.PodCIDR)
		if err := cfg.startNode(ctx, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := cfg.importImages(ctx, n, tars); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := cfg.startKubelet(n); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	step("waiting for nodes to be Ready")
	if err := cfg.waitNodesReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	step("installing CoreDNS")
	if err := cfg.installAddons(ctx); err != nil {
		return err
	}
	step("installing manifests/ and the sample app")
	if err := cfg.installManifests(ctx, log); err != nil {
		return err
	}
	log.Info("cluster is up", "took", time.Since(start).Round(100*time.Millisecond),
		"kubeconfig", cfg.Kubeconfig(), "try", "kubectl --kubeconfig "+cfg.Kubeconfig()+" get pods -A")
	return nil
}

func stepper(log *slog.Logger, start time.Time) func(msg string, args ...any) {
	return func(msg string, args ...any) {
		log.Info(msg, append(args, "elapsed", time.Since(start).Round(100*time.Millisecond))...)
	}
}

// Down stops and removes everything Up created; it is safe to call on a cluster that
// is half up, already down, or never existed. keepLogs keeps the log directory.
func Down(ctx context.Context, cfg Config, log *slog.Logger, keepLogs bool) error {
	cfg, _ = cfg.Load()
	var errs []error
	nodes := cfg.nodes()
	slices.Reverse(nodes)
	for _, n := range nodes {
		log.Info("stopping node", "node", n.Name)
		errs = append(errs, cfg.stopNode(ctx, n))
	}
	cp := slices.Clone(controlPlaneDaemons)
	slices.Reverse(cp)
	for _, d := range cp {
		errs = append(errs, cfg.stop(ctx, d, 10*time.Second))
	}
	log.Info("removing network namespaces")
	errs = append(errs, cfg.teardownNetwork(ctx))
	errs = append(errs, cfg.removeHostDirs())
	if err := errors.Join(errs...); err != nil {
		return err // keep the state so a second Down can finish the job
	}
	if keepLogs {
		ents, _ := os.ReadDir(cfg.StateDir)
		for _, e := range ents {
			if e.Name() != "logs" {
				if err := os.RemoveAll(filepath.Join(cfg.StateDir, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	log.Info("removing state", "dir", cfg.StateDir)
	return os.RemoveAll(cfg.StateDir)
}

// removeHostDirs removes the empty directories Up had to create on the host as mount
// points; a directory something else has since filled is left alone.
func (c Config) removeHostDirs() error {
	b, err := os.ReadFile(filepath.Join(c.StateDir, "host-dirs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// Removing a directory that is a mount point in another mount namespace detaches
	// that mount (Linux >= 3.18): while another cluster's nodes use these paths, keep
	// them.
	if other := otherNodeCgroups(); len(other) == 0 {
		dirs := strings.Fields(string(b))
		slices.Sort(dirs)
		for _, d := range slices.Compact(dirs) {
			_ = os.Remove(d) // only succeeds when empty
		}
	}
	return os.Remove(filepath.Join(c.StateDir, "host-dirs"))
}

// Status writes what runs and what the API server says about the nodes.
func Status(ctx context.Context, cfg Config, w io.Writer) error {
	cfg, ok := cfg.Load()
	if !ok {
		fmt.Fprintln(w, "no cluster (run `make up`)")
		return nil
	}
	for _, d := range cfg.daemonNames() {
		if r, ok := cfg.running(d); ok {
			fmt.Fprintf(w, "%-28s running  pid %d\n", d, r.Pid)
		} else {
			fmt.Fprintf(w, "%-28s STOPPED  log %s\n", d, filepath.Join(cfg.logDir(), d+".log"))
		}
	}
	fmt.Fprintf(w, "\nkubeconfig: %s\n\n", cfg.Kubeconfig())
	out, err := cfg.kubectlOutput(ctx, nil, "get", "nodes", "-o", "wide")
	if _, werr := w.Write(out); werr != nil {
		return werr
	}
	return err
}

// LoadImage imports an image tarball into every node's containerd.
func LoadImage(ctx context.Context, cfg Config, tar string) error {
	cfg, ok := cfg.Load()
	if !ok {
		return errors.New("no cluster is running (run `make up`)")
	}
	abs, err := filepath.Abs(tar)
	if err != nil {
		return err
	}
	for _, n := range cfg.nodes() {
		if err := cfg.importImages(ctx, n, []string{abs}); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

func (c Config) importImages(ctx context.Context, n node, tars []string) error {
	for _, t := range tars {
		if err := c.inNode(ctx, n, "ctr", "--address", "/run/containerd/containerd.sock",
			"-n", "k8s.io", "images", "import", t); err != nil {
			return fmt.Errorf("import %s: %w", filepath.Base(t), err)
		}
	}
	return nil
}

// kubectlOutput runs the cluster's kubectl with the admin kubeconfig.
func (c Config) kubectlOutput(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl(), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (c Config) waitNodesReady(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, "nodes Ready", timeout, func() error {
		for _, n := range c.nodes() {
			if _, ok := c.running(daemonName(n, "kubelet")); !ok {
				return errDied(daemonName(n, "kubelet"), c.logDir())
			}
		}
		out, err := c.kubectlOutput(ctx, nil, "get", "nodes", "-o",
			`jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		ready := 0
		for _, l := range strings.Fields(string(out)) {
			if strings.HasSuffix(l, "=True") {
				ready++
			}
		}
		if ready < c.Nodes {
			return fmt.Errorf("%d of %d nodes Ready: %s", ready, c.Nodes, strings.Join(strings.Fields(string(out)), " "))
		}
		return nil
	})
}
