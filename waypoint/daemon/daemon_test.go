package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	caapi "github.com/ambit-mesh/ambit/api/ca"
	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/server"
	wpxds "github.com/ambit-mesh/ambit/waypoint/xds"
)

const token = "projected-token"

// controlPlane is a fake istiod-lite: a CA signing any CSR with its root,
// and an ADS server sending fixed resources, both checking the token.
type controlPlane struct {
	caapi.UnimplementedCertificateServiceServer
	discovery.UnimplementedAggregatedDiscoveryServiceServer

	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	// caOpen, while open, makes the CA answer Unavailable.
	caOpen chan struct{}

	mu        sync.Mutex
	nodeIDs   []string
	resources map[string][]*discovery.Resource
}

func newControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &controlPlane{root: root, rootKey: key, caOpen: make(chan struct{}), resources: map[string][]*discovery.Resource{}}
}

func (cp *controlPlane) sign(t *testing.T, pub any, tmpl *x509.Certificate) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, cp.root, pub, cp.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func authorized(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+token {
		return status.Errorf(codes.Unauthenticated, "authorization %q", got)
	}
	return nil
}

func (cp *controlPlane) CreateCertificate(ctx context.Context, req *caapi.CreateCertificateRequest) (*caapi.CreateCertificateResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	select {
	case <-cp.caOpen:
	default:
		return nil, status.Error(codes.Unavailable, "CA not open yet")
	}
	blk, _ := pem.Decode([]byte(req.GetCsr()))
	if blk == nil {
		return nil, status.Error(codes.InvalidArgument, "no CSR")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: csr.URIs,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, cp.root, csr.PublicKey, cp.rootKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &caapi.CreateCertificateResponse{
		CertChain:   []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))},
		TrustBundle: []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.root.Raw}))},
	}, nil
}

func (cp *controlPlane) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	if err := authorized(st.Context()); err != nil {
		return err
	}
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetResponseNonce() != "" {
			continue // an ACK
		}
		cp.mu.Lock()
		cp.nodeIDs = append(cp.nodeIDs, req.GetNode().GetId())
		res := cp.resources[req.GetTypeUrl()]
		cp.mu.Unlock()
		if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), Nonce: req.GetTypeUrl(), Resources: res}); err != nil {
			return err
		}
	}
}

func (cp *controlPlane) add(t *testing.T, typeURL, name string, m proto.Message) {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.resources[typeURL] = append(cp.resources[typeURL], &discovery.Resource{Name: name, Version: "1", Resource: a})
}

// serve starts the fake on loopback with a TLS certificate for
// istiod-lite.istio-system.svc and returns its address.
func (cp *controlPlane) serve(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der := cp.sign(t, key.Public(), &x509.Certificate{
		SerialNumber: big.NewInt(2), DNSNames: []string{"istiod-lite.istio-system.svc"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13,
	})))
	caapi.RegisterCertificateServiceServer(g, cp)
	discovery.RegisterAggregatedDiscoveryServiceServer(g, cp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startWaypoint runs a daemon against cp and returns its health and admin
// addresses.
func startWaypoint(t *testing.T, cp *controlPlane) (health, admin string) {
	t.Helper()
	dir := t.TempDir()
	rootFile, tokenFile := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "istio-token")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cp.root.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	health, admin = freeAddr(t), freeAddr(t)
	cfg := Default()
	cfg.Namespace, cfg.ServiceAccount, cfg.Gateway = "demo", "waypoint", "waypoint"
	cfg.ControlPlane, cfg.ServerName = cp.serve(t), "istiod-lite.istio-system.svc"
	cfg.RootCertFile, cfg.TokenFile = rootFile, tokenFile
	cfg.Server = server.Config{HBONEAddr: freeAddr(t), MetricsAddr: "-", HealthAddr: health, AdminAddr: admin}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return health, admin
}

// get returns the status and body of url, or 0 while nothing listens.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond (the daemon runs real network I/O in other
// goroutines, so there is nothing to synchronize on but what it serves).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDaemonBecomesReadyWithCertificateAndConfig(t *testing.T) {
	cp := newControlPlane(t)
	cp.add(t, workload.AddressType, "demo/echo.demo.svc.cluster.local", &workload.Address{Type: &workload.Address_Service{Service: &workload.Service{
		Name: "echo", Namespace: "demo", Hostname: "echo.demo.svc.cluster.local",
		Addresses: []*workload.NetworkAddress{{Address: []byte{10, 96, 0, 10}}},
		Ports:     []*workload.Port{{ServicePort: 80, TargetPort: 8080}},
	}}})
	cp.add(t, workload.AuthorizationType, "demo/get-only", &workload.Authorization{
		Name: "get-only", Namespace: "demo", Action: workload.Action_ALLOW,
		Targets: []*workload.PolicyTarget{{Kind: "Gateway", Namespace: "demo", Name: "waypoint"}},
	})
	health, admin := startWaypoint(t, cp)

	// Configuration arrives, but without a certificate the waypoint is not ready.
	waitFor(t, "the xDS subscription", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return len(cp.nodeIDs) == len(wpxds.Types())
	})
	if code, _ := get(t, "http://"+health+"/healthz/ready"); code == http.StatusOK {
		t.Fatal("ready before having a certificate")
	}
	for _, id := range cp.nodeIDs {
		if id != "waypoint~demo~waypoint" {
			t.Errorf("node id %q", id)
		}
	}

	close(cp.caOpen)
	waitFor(t, "readiness", func() bool { code, _ := get(t, "http://"+health+"/healthz/ready"); return code == http.StatusOK })
	_, body := get(t, "http://"+admin+"/config_dump")
	var dump struct {
		Gateway  struct{ Kind, Namespace, Name string }
		Services []struct{ Name string }
		Policies []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config dump %q: %v", body, err)
	}
	if dump.Gateway.Name != "waypoint" || len(dump.Services) != 1 || dump.Services[0].Name != "echo" ||
		len(dump.Policies) != 1 || dump.Policies[0].Name != "get-only" {
		t.Errorf("config dump: %s", body)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Default()
	good.Namespace, good.ServiceAccount, good.Gateway = "demo", "waypoint", "waypoint"
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, tt := range map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"no namespace":     {func(c *Config) { c.Namespace = "" }, "namespace"},
		"no gateway":       {func(c *Config) { c.Gateway = "" }, "gateway"},
		"other node id":    {func(c *Config) { c.NodeID = "waypoint~demo~other" }, "node id"},
		"bad address":      {func(c *Config) { c.ControlPlane = "istiod" }, "control plane"},
		"relative token":   {func(c *Config) { c.TokenFile = "token" }, "token file"},
		"bad trust domain": {func(c *Config) { c.TrustDomain = "Bad Domain" }, "trust domain"},
	} {
		c := good
		tt.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one about %s", name, err, tt.want)
		}
	}
}
