package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// KubeVersion is the Kubernetes release the cluster builds and runs. It stays on 1.33:
// kubectl on these machines is 1.32 and cgroup v1 hosts are refused by default from 1.35.
const KubeVersion = "v1.33.13"

// Config describes one local cluster. The zero value is not usable; start from
// DefaultConfig.
type Config struct {
	// RepoRoot is the Ambit checkout: manifests/ and e2e/kubernetes/ are read from it.
	RepoRoot string
	// StateDir holds everything a running cluster owns (PKI, kubeconfig, node
	// directories, logs, pid files). Down removes it.
	StateDir string
	// CacheDir keeps build outputs between clusters (Kubernetes binaries, images).
	CacheDir string
	// Nodes is the number of worker nodes (at least 2).
	Nodes int
	// APIPort is the port on 127.0.0.1 that forwards to the API server.
	APIPort int
	// Prefix names the network namespaces, cgroups and nodes so that two clusters, or a
	// cluster and anything else on the machine, never share a name.
	Prefix string
	// Helper is the ambit-cluster binary. The cluster runs it for its hidden
	// subcommands (API forward, node mount setup, joining cgroups), so it must be that
	// binary and not, say, a test binary that would run its tests again.
	Helper string
}

// DefaultConfig returns the configuration `make up` uses for the checkout at repoRoot.
// AMBIT_CACHE, AMBIT_PREFIX and AMBIT_API_PORT override the cache directory, the name
// prefix and the API port.
func DefaultConfig(repoRoot string) Config {
	cache := os.Getenv("AMBIT_CACHE")
	if cache == "" {
		if d, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(d, "ambit")
		} else {
			cache = filepath.Join(os.TempDir(), "ambit-cache")
		}
	}
	c := Config{
		RepoRoot: repoRoot,
		StateDir: filepath.Join(repoRoot, ".ambit"),
		CacheDir: cache,
		Nodes:    2,
		APIPort:  6443,
		Prefix:   "ambit",
	}
	// A second checkout (or CI beside a developer's cluster) picks its own names.
	if p := os.Getenv("AMBIT_PREFIX"); p != "" {
		c.Prefix = p
	}
	if p, err := strconv.Atoi(os.Getenv("AMBIT_API_PORT")); err == nil {
		c.APIPort = p
	}
	return c
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.RepoRoot) {
		errs = append(errs, fmt.Errorf("repo root %q must be an absolute path", c.RepoRoot))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q must be an absolute path", c.StateDir))
	}
	if !filepath.IsAbs(c.CacheDir) {
		errs = append(errs, fmt.Errorf("cache dir %q must be an absolute path", c.CacheDir))
	}
	if c.Nodes < 2 || c.Nodes > 9 {
		errs = append(errs, fmt.Errorf("nodes = %d: want 2 to 9", c.Nodes))
	}
	if c.APIPort <= 0 || c.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("api port %d out of range", c.APIPort))
	}
	if fi, err := os.Stat(c.Helper); err != nil || fi.IsDir() || filepath.Base(c.Helper) != "ambit-cluster" {
		errs = append(errs, fmt.Errorf("helper %q: want the path of the ambit-cluster binary", c.Helper))
	}
	if c.Prefix == "" || len(c.Prefix) > 8 {
		errs = append(errs, fmt.Errorf("prefix %q: want 1 to 8 characters (it names interfaces)", c.Prefix))
	}
	return errors.Join(errs...)
}

// Fixed addressing. The control-plane namespace holds a bridge that every node's eth0
// joins; pod CIDRs are routed statically between nodes. None of these ranges is routed
// anywhere outside the cluster's own namespaces.
var (
	linkPrefix    = netip.MustParsePrefix("10.200.0.0/24")
	apiServerAddr = netip.MustParseAddr("10.200.0.1")
	clusterCIDR   = netip.MustParsePrefix("10.244.0.0/16")
	serviceCIDR   = netip.MustParsePrefix("10.96.0.0/16")
	kubeAPIVIP    = netip.MustParseAddr("10.96.0.1")
	clusterDNSVIP = netip.MustParseAddr("10.96.0.10")
)

const clusterDomain = "cluster.local"

// node is one worker node's derived names and addresses.
type node struct {
	Index   int    // 1-based
	Name    string // Kubernetes node name
	Netns   string // network namespace name
	IP      netip.Addr
	PodCIDR netip.Prefix
	Dir     string // per-node state directory
	Cgroup  string // kubelet cgroupRoot, without the leading slash
}

func (c Config) node(i int) node {
	return node{
		Index:   i,
		Name:    fmt.Sprintf("%s-node-%d", c.Prefix, i),
		Netns:   fmt.Sprintf("%s-n%d", c.Prefix, i),
		IP:      netip.AddrFrom4([4]byte{10, 200, 0, byte(10 + i)}),
		PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
		Dir:     filepath.Join(c.StateDir, "nodes", fmt.Sprintf("n%d", i)),
		Cgroup:  fmt.Sprintf("%s-n%d", c.Prefix, i),
	}
}

func (c Config) nodes() []node {
	ns := make([]node, 0, c.Nodes)
	for i := 1; i <= c.Nodes; i++ {
		ns = append(ns, c.node(i))
	}
	return ns
}

// cpNetns is the control plane's network namespace.
func (c Config) cpNetns() string { return c.Prefix + "-cp" }

func (c Config) bridge() string { return c.Prefix + "-br" }

func (c Config) kubeBinDir() string { return filepath.Join(c.CacheDir, "k8s", KubeVersion) }

func (c Config) kubeBin(name string) string { return filepath.Join(c.kubeBinDir(), name) }

func (c Config) pkiDir() string { return filepath.Join(c.StateDir, "pki") }

func (c Config) logDir() string { return filepath.Join(c.StateDir, "logs") }

// LogDir holds one log file per cluster process.
func (c Config) LogDir() string { return c.logDir() }

func (c Config) runDir() string { return filepath.Join(c.StateDir, "run") }

// Kubeconfig is the admin kubeconfig Up writes.
func (c Config) Kubeconfig() string { return filepath.Join(c.StateDir, "kubeconfig") }

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// NodeNetnsPath returns the network namespace file of the named Kubernetes node, for
// tests that look at a node's link (captures); ok is false for an unknown node.
func (c Config) NodeNetnsPath(nodeName string) (path string, ok bool) {
	for _, n := range c.nodes() {
		if n.Name == nodeName {
			return netnsPath(n.Netns), true
		}
	}
	return "", false
}
