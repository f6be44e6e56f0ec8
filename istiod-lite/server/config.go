// Package server assembles istiod-lite: Kubernetes informers feeding the model, the
// delta xDS server and the certificate authority on one gRPC port (TLS, callers
// authenticated by ServiceAccount token), the leader-only writers (policy status,
// waypoint deployer), health on 15021 and metrics on 15014.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/istiod-lite/deployer"
)

// Config is istiod-lite's configuration; DefaultConfig documents the defaults.
type Config struct {
	// Kubeconfig is a kubeconfig path; empty means in-cluster.
	Kubeconfig string
	// Namespace is where istiod-lite runs and keeps the CA secret, the leader lease and
	// the root ConfigMap; it is also the mesh's root namespace.
	Namespace string
	// ServiceName is istiod-lite's Service, named in its serving certificate.
	ServiceName string
	// PodName identifies this replica in leader election.
	PodName     string
	TrustDomain string
	// GRPCAddr serves xDS and the CA; HealthAddr /healthz/ready; MetricsAddr /metrics.
	GRPCAddr, HealthAddr, MetricsAddr string
	// NodeProxies are the "namespace/serviceaccount" of ztunnels: they may subscribe
	// as their node and ask for the identities of pods on it.
	NodeProxies []string
	// CertTTL is the default workload certificate lifetime, MaxCertTTL the longest
	// one granted.
	CertTTL, MaxCertTTL time.Duration
	// LeaderElection guards the writers (status, deployer); off runs them always.
	LeaderElection bool
	// Waypoint is the template of waypoint pods.
	Waypoint deployer.PodConfig
	Log      *slog.Logger
}

// DefaultConfig is the configuration of the manifests in manifests/istiod-lite.yaml.
func DefaultConfig() Config {
	return Config{
		Namespace:      mesh.RootNamespace,
		ServiceName:    "istiod-lite",
		TrustDomain:    mesh.TrustDomain,
		GRPCAddr:       fmt.Sprintf(":%d", mesh.PortXDS),
		HealthAddr:     fmt.Sprintf(":%d", mesh.PortHealth),
		MetricsAddr:    fmt.Sprintf(":%d", mesh.PortControlPlaneMetrics),
		NodeProxies:    []string{mesh.RootNamespace + "/ztunnel"},
		CertTTL:        24 * time.Hour,
		MaxCertTTL:     7 * 24 * time.Hour,
		LeaderElection: true,
		Waypoint: deployer.PodConfig{
			Image:        "ambit.local/waypoint:dev",
			PullPolicy:   corev1.PullIfNotPresent,
			ControlPlane: fmt.Sprintf("istiod-lite.%s.svc:%d", mesh.RootNamespace, mesh.PortXDS),
			TrustDomain:  mesh.TrustDomain,
		},
	}
}

// Validate checks the configuration once, at start.
func (c Config) Validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if c.TrustDomain == "" || strings.ContainsAny(c.TrustDomain, "/: ") {
		errs = append(errs, fmt.Errorf("trust domain %q is not a valid SPIFFE trust domain", c.TrustDomain))
	}
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("gRPC address is required"))
	}
	if c.LeaderElection && c.PodName == "" {
		errs = append(errs, errors.New("leader election needs the pod name (POD_NAME)"))
	}
	if c.CertTTL <= 0 || c.MaxCertTTL < c.CertTTL {
		errs = append(errs, fmt.Errorf("certificate TTL %v must be positive and at most the maximum %v", c.CertTTL, c.MaxCertTTL))
	}
	for _, np := range c.NodeProxies {
		if ns, sa, ok := strings.Cut(np, "/"); !ok || ns == "" || sa == "" {
			errs = append(errs, fmt.Errorf("node proxy %q must be namespace/serviceaccount", np))
		}
	}
	if c.Waypoint.Image == "" {
		errs = append(errs, errors.New("waypoint image is required"))
	}
	return errors.Join(errs...)
}
