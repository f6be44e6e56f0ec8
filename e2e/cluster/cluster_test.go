package cluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testHelper is an ambit-cluster binary built once for this package's tests.
var testHelper string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "ambit-cluster-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, _ := filepath.Abs("../..")
	testHelper, err = BuildHelper(context.Background(), root, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testConfig() Config {
	c := DefaultConfig("/repo")
	c.CacheDir = "/cache"
	c.Helper = "/bin/ambit-cluster"
	c.Prefix, c.APIPort = "ambit", 6443 // whatever AMBIT_PREFIX/AMBIT_API_PORT say
	return c
}

func TestValidateReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"default is valid", func(c *Config) { c.Helper = testHelper }, nil},
		{"helper must be ambit-cluster", func(c *Config) { c.Helper = os.Args[0] }, []string{"want the path of the ambit-cluster binary"}},
		{"one node is not a cluster", func(c *Config) { c.Nodes = 1 }, []string{"nodes = 1"}},
		{"relative paths and bad port", func(c *Config) { c.StateDir = "state"; c.APIPort = 70000 },
			[]string{`state dir "state"`, "api port 70000"}},
		{"long prefix", func(c *Config) { c.Prefix = "much-too-long" }, []string{"prefix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestNodesGetDistinctAddressesAndNames(t *testing.T) {
	c := testConfig()
	c.Nodes = 3
	seen := map[string]bool{}
	for _, n := range c.nodes() {
		for i, v := range []string{n.Name, n.Netns, n.IP.String(), n.PodCIDR.String(), n.Dir, n.Cgroup} {
			key := fmt.Sprint(i, v) // the same field of two nodes must differ
			if seen[key] {
				t.Errorf("node %d reuses %q", n.Index, v)
			}
			seen[key] = true
		}
		if !linkPrefix.Contains(n.IP) || n.IP == apiServerAddr {
			t.Errorf("node %d IP %s not a free address in %s", n.Index, n.IP, linkPrefix)
		}
		if !clusterCIDR.Contains(n.PodCIDR.Addr()) {
			t.Errorf("node %d pod CIDR %s outside %s", n.Index, n.PodCIDR, clusterCIDR)
		}
	}
}

// TestRenderedConfigsMatchGolden pins what containerd, kubelet, kube-proxy and the CNI
// plugins read; run with -update after an intended change.
func TestRenderedConfigsMatchGolden(t *testing.T) {
	c := testConfig()
	n := c.node(2)
	kl, err := kubeletConfig(c, n)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := kubeProxyConfig(n)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{
		"containerd.toml":   containerdConfig(),
		"kubelet.yaml":      kl,
		"kube-proxy.yaml":   kp,
		"10-ambit.conflist": cniConfig(n),
	} {
		golden := filepath.Join("testdata", name+".golden")
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		if d := cmp.Diff(string(want), got); d != "" {
			t.Errorf("%s differs from %s (-want +got):\n%s", name, golden, d)
		}
	}
}

func TestProcStartParsesCommandsWithSpaces(t *testing.T) {
	st, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st == 0 {
		t.Fatal("start time of this process is 0")
	}
	if _, err := procStart(1 << 30); err == nil {
		t.Fatal("procStart of a pid that cannot exist succeeded")
	}
}

func TestUnescapeMountDecodesOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/run/netns/plain`:     "/run/netns/plain",
		`/a\040b`:              "/a b",
		`/tab\011and\134slash`: "/tab\tand\\slash",
		`/trailing\04`:         `/trailing\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunningIgnoresReusedPid(t *testing.T) {
	c := testConfig()
	c.StateDir = t.TempDir()
	if err := os.MkdirAll(c.runDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	write := func(start uint64) {
		rec := []byte(fmt.Sprintf("%d %d\n", os.Getpid(), start))
		if err := os.WriteFile(c.pidFile("x"), rec, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(st)
	if _, ok := c.running("x"); !ok {
		t.Fatal("running() = false for this live process")
	}
	write(st + 1)
	if _, ok := c.running("x"); ok {
		t.Fatal("running() = true for a pid whose start time differs (a reused pid)")
	}
}
