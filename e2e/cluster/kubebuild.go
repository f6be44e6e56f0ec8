package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kubeCommands are the Kubernetes commands the cluster runs, all built from
// k8s.io/kubernetes at KubeVersion in the tools module e2e/kubernetes. kubectl is built
// too so that tests drive the cluster with a client of the same minor version.
var kubeCommands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet", "kubectl"}

// Kubectl is the path of the kubectl built for the cluster.
func (c Config) Kubectl() string { return c.kubeBin("kubectl") }

// ensureKubeBinaries builds whatever Kubernetes binary is missing from the cache. The
// first build takes minutes; later calls only stat files.
func (c Config) ensureKubeBinaries(ctx context.Context, log *slog.Logger) error {
	var missing []string
	for _, cmd := range kubeCommands {
		if _, err := os.Stat(c.kubeBin(cmd)); err != nil {
			missing = append(missing, cmd)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(c.kubeBinDir(), 0o755); err != nil {
		return err
	}
	minor := strings.Split(strings.TrimPrefix(KubeVersion, "v"), ".")[1]
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X k8s.io/component-base/version.gitVersion=" + KubeVersion,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=" + minor,
		"-X k8s.io/component-base/version.gitTreeState=clean",
		"-X k8s.io/component-base/version.buildDate=" + time.Now().UTC().Format(time.RFC3339),
		"-X k8s.io/client-go/pkg/version.gitVersion=" + KubeVersion,
		"-X k8s.io/client-go/pkg/version.gitMajor=1",
		"-X k8s.io/client-go/pkg/version.gitMinor=" + minor,
	}, " ")
	modDir := filepath.Join(c.RepoRoot, "e2e", "kubernetes")
	for i, cmd := range missing {
		start := time.Now()
		log.Info("building Kubernetes binary (the first build takes several minutes)",
			"binary", cmd, "version", KubeVersion, "step", fmt.Sprintf("%d/%d", i+1, len(missing)))
		tmp := c.kubeBin(cmd) + ".tmp"
		b := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "k8s.io/kubernetes/cmd/"+cmd)
		b.Dir = modDir
		b.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
		if out, err := b.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s %s: %w\n%s", cmd, KubeVersion, err, out)
		}
		if err := os.Rename(tmp, c.kubeBin(cmd)); err != nil {
			return err
		}
		log.Info("built", "binary", cmd, "took", time.Since(start).Round(time.Second))
	}
	return nil
}

// BuildHelper builds cmd/ambit-cluster into dir and returns its path, for callers that
// are not that binary themselves (tests) and need a Config.Helper.
func BuildHelper(ctx context.Context, repoRoot, dir string) (string, error) {
	out := filepath.Join(dir, "ambit-cluster")
	b := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/ambit-cluster")
	b.Dir = repoRoot
	b.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := b.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build ambit-cluster: %w\n%s", err, o)
	}
	return out, nil
}
