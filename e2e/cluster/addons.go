package cluster

import (
	"context"
	_ "embed"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

//go:embed addons/coredns.yaml
var corednsManifest []byte

// installAddons installs what every cluster has before the mesh: CoreDNS.
func (c Config) installAddons(ctx context.Context) error {
	if _, err := c.kubectlOutput(ctx, corednsManifest, "apply", "-f", "-"); err != nil {
		return err
	}
	_, err := c.kubectlOutput(ctx, nil, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s")
	return err
}

// installManifests applies the mesh's manifests exactly as a user would on any
// cluster: manifests/crds first, then every other manifest file, then the sample apps
// in manifests/samples; then waits for every Deployment and DaemonSet to roll out.
func (c Config) installManifests(ctx context.Context, log *slog.Logger) error {
	root := filepath.Join(c.RepoRoot, "manifests")
	groups := [][]string{
		yamlFiles(filepath.Join(root, "crds")),
		yamlFiles(root),
		yamlFiles(filepath.Join(root, "samples")),
	}
	for _, files := range groups {
		for _, f := range files {
			log.Info("applying", "manifest", strings.TrimPrefix(f, c.RepoRoot+"/"))
			if _, err := c.kubectlOutput(ctx, nil, "apply", "--server-side", "--force-conflicts", "-f", f); err != nil {
				return err
			}
		}
		if len(files) > 0 && filepath.Base(filepath.Dir(files[0])) == "crds" {
			if _, err := c.kubectlOutput(ctx, nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
				return err
			}
		}
	}
	return c.waitRollouts(ctx, 3*time.Minute)
}

// yamlFiles lists the manifest files directly in dir, sorted.
func yamlFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var files []string
	for _, e := range ents {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(files)
	return files
}

// waitRollouts waits for every Deployment and DaemonSet in the cluster to be rolled out.
func (c Config) waitRollouts(ctx context.Context, timeout time.Duration) error {
	out, err := c.kubectlOutput(ctx, nil, "get", "deployments,daemonsets", "-A", "-o",
		`jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.namespace}{"\n"}{end}`)
	if err != nil {
		return err
	}
	for _, l := range strings.Fields(string(out)) {
		obj, ns, _ := strings.Cut(l, "@")
		if _, err := c.kubectlOutput(ctx, nil, "-n", ns, "rollout", "status", strings.ToLower(obj),
			"--timeout="+timeout.String()); err != nil {
			return err
		}
	}
	return nil
}
