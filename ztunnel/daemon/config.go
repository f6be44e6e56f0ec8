// Package daemon wires ztunnel's parts into one process: the xDS client
// feeding the tables, the certificate manager over istiod-lite's CA, the
// proxy serving enrolled pods, the hand-off client to the node agent and
// the telemetry servers, run together until the context ends.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/telemetry"
)

// Config is ztunnel's configuration (flags of cmd/ztunnel; defaults in
// Default and docs/ztunnel.md).
type Config struct {
	// NodeName is the node this ztunnel serves (downward API spec.nodeName).
	NodeName string
	// ControlPlane is istiod-lite's xDS and CA address (TLS gRPC).
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
	// RunDir is the node agent's socket directory; the hand-off socket is
	// <RunDir>/<NodeName>/ztunnel.sock unless HandoffSocket says otherwise.
	RunDir        string
	HandoffSocket string
	// Telemetry listen addresses (empty: off).
	MetricsAddr, HealthAddr, AdminAddr string
	// CertTTL is the certificate lifetime asked for (0: the CA's default).
	CertTTL time.Duration
	// ReadyTimeout and DrainTimeout: see proxy.Config.
	ReadyTimeout, DrainTimeout time.Duration
	Log                        *slog.Logger
}

// Default returns the defaults for everything but NodeName.
func Default() Config {
	return Config{
		ControlPlane: "istiod-lite.istio-system.svc:15012",
		RootCertFile: "/var/run/secrets/istio/root-cert.pem",
		TokenFile:    "/var/run/secrets/tokens/istio-token",
		TrustDomain:  "cluster.local",
		RunDir:       "/var/run/ambit",
		MetricsAddr:  telemetry.DefaultMetricsAddr,
		HealthAddr:   telemetry.DefaultHealthAddr,
		AdminAddr:    telemetry.DefaultAdminAddr,
		ReadyTimeout: proxy.DefaultReady,
		DrainTimeout: proxy.DefaultDrain,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required (set NODE_NAME from spec.nodeName)"))
	}
	if _, _, err := net.SplitHostPort(c.ControlPlane); err != nil {
		errs = append(errs, fmt.Errorf("control plane address %q: %w", c.ControlPlane, err))
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("trust domain %q: %w", c.TrustDomain, err))
	}
	for name, p := range map[string]string{"root cert file": c.RootCertFile, "token file": c.TokenFile, "run dir": c.RunDir} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", name, p))
		}
	}
	if c.HandoffSocket != "" && !filepath.IsAbs(c.HandoffSocket) {
		errs = append(errs, fmt.Errorf("hand-off socket must be an absolute path, got %q", c.HandoffSocket))
	}
	if c.CertTTL < 0 || c.ReadyTimeout <= 0 || c.DrainTimeout < 0 {
		errs = append(errs, errors.New("cert TTL and drain timeout must not be negative, ready timeout must be positive"))
	}
	return errors.Join(errs...)
}

// Socket is the node agent's hand-off socket.
func (c Config) Socket() string {
	if c.HandoffSocket != "" {
		return c.HandoffSocket
	}
	return filepath.Join(c.RunDir, c.NodeName, "ztunnel.sock")
}

// serverName is the name istiod-lite's certificate is checked against.
func (c Config) serverName() string {
	if c.ServerName != "" {
		return c.ServerName
	}
	host, _, _ := net.SplitHostPort(c.ControlPlane) // validated
	return host
}

// NodeID is the xDS node id istiod-lite expects of this ztunnel.
func (c Config) NodeID() string { return "ztunnel~" + c.NodeName }
