// Package daemon runs a waypoint in a cluster: its certificate from
// istiod-lite's CA (internal/identity), its configuration over delta xDS
// (internal/xds feeding waypoint/xds), and the waypoint server
// (waypoint/server), together until the context ends. The pod becomes ready
// once it holds both a certificate and a first full configuration.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/server"
)

// Defaults (what istiod-lite's waypoint deployer sets up; docs/istiod-lite.md).
const (
	DefaultControlPlane = "istiod-lite.istio-system.svc:15012"
	DefaultRootCertFile = "/var/run/secrets/istio/root-cert.pem"
	DefaultTokenFile    = "/var/run/secrets/tokens/istio-token"
	DefaultTrustDomain  = "cluster.local"
)

// Config configures an in-cluster waypoint.
type Config struct {
	// Namespace, ServiceAccount and Gateway say who the waypoint is: the
	// pod's namespace and ServiceAccount (its identity) and its Gateway.
	Namespace, ServiceAccount, Gateway string
	// NodeID is the xDS node id; default "waypoint~<Namespace>~<Gateway>".
	NodeID string
	// ControlPlane is istiod-lite's xDS and CA address (gRPC over TLS).
	ControlPlane string
	// ServerName is the name istiod-lite's certificate must carry; default
	// the host of ControlPlane.
	ServerName string
	// RootCertFile holds the mesh root (ConfigMap istio-ca-root-cert): it
	// verifies istiod-lite and is the initial trust bundle.
	RootCertFile string
	// TokenFile is the projected ServiceAccount token (audience istio-ca)
	// sent to istiod-lite with every call.
	TokenFile string
	// TrustDomain is the mesh's SPIFFE trust domain.
	TrustDomain string
	// CertTTL is the certificate lifetime asked for (0: the CA's default).
	CertTTL time.Duration
	// Server holds listen addresses, tracing and proxy tunables; its
	// Identity, SVIDs, Bundles and Logger are set by the daemon.
	Server server.Config
	Log    *slog.Logger
}

// Default returns the defaults for everything but who the waypoint is.
func Default() Config {
	return Config{
		ControlPlane: DefaultControlPlane, RootCertFile: DefaultRootCertFile,
		TokenFile: DefaultTokenFile, TrustDomain: DefaultTrustDomain,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	for name, v := range map[string]string{
		"namespace (POD_NAMESPACE)": c.Namespace, "service account (SERVICE_ACCOUNT)": c.ServiceAccount,
		"gateway (GATEWAY_NAME)": c.Gateway,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	if c.NodeID != "" && c.NodeID != c.defaultNodeID() {
		errs = append(errs, fmt.Errorf("xDS node id %q is not %q", c.NodeID, c.defaultNodeID()))
	}
	if _, _, err := net.SplitHostPort(c.ControlPlane); err != nil {
		errs = append(errs, fmt.Errorf("control plane address %q: %w", c.ControlPlane, err))
	}
	if _, err := c.Identity(); err != nil {
		errs = append(errs, err)
	}
	for name, p := range map[string]string{"root cert file": c.RootCertFile, "token file": c.TokenFile} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", name, p))
		}
	}
	if c.CertTTL < 0 {
		errs = append(errs, errors.New("cert TTL must not be negative"))
	}
	return errors.Join(errs...)
}

// Identity is the waypoint's SPIFFE id: its ServiceAccount's.
func (c Config) Identity() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("trust domain %q: %w", c.TrustDomain, err)
	}
	id, err := spiffeid.FromSegments(td, "ns", c.Namespace, "sa", c.ServiceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity of %s/%s: %w", c.Namespace, c.ServiceAccount, err)
	}
	return id, nil
}

// Ref is the waypoint's own Gateway.
func (c Config) Ref() model.Ref {
	return model.Ref{Kind: model.KindGateway, Namespace: c.Namespace, Name: c.Gateway}
}

func (c Config) nodeID() string {
	if c.NodeID != "" {
		return c.NodeID
	}
	return c.defaultNodeID()
}

// defaultNodeID is what istiod-lite expects of this waypoint: it checks
// the caller's ServiceAccount against the Gateway named here.
func (c Config) defaultNodeID() string {
	return strings.Join([]string{"waypoint", c.Namespace, c.Gateway}, "~")
}

func (c Config) serverName() string {
	if c.ServerName != "" {
		return c.ServerName
	}
	host, _, _ := net.SplitHostPort(c.ControlPlane) // validated
	return host
}
