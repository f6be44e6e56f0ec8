package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec is one certificate the cluster needs.
type certSpec struct {
	Name   string // file stem under pki/
	CN     string
	Orgs   []string
	DNS    []string
	IPs    []net.IP
	Server bool
	Client bool
}

// authority is a CA held in memory while the PKI is written.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// writePKI creates every key and certificate the control plane and nodes use. It runs
// once per cluster; a second Up reuses what is there.
func (c Config) writePKI() error {
	dir := c.pkiDir()
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newAuthority(dir, "ca", "ambit-local-cluster-ca")
	if err != nil {
		return err
	}
	fp, err := newAuthority(dir, "front-proxy-ca", "ambit-front-proxy-ca")
	if err != nil {
		return err
	}
	apiDNS := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + clusterDomain}
	apiIPs := []net.IP{net.IPv4(127, 0, 0, 1), apiServerAddr.AsSlice(), kubeAPIVIP.AsSlice()}
	specs := []certSpec{
		{Name: "apiserver", CN: "kube-apiserver", DNS: apiDNS, IPs: apiIPs, Server: true},
		{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}, Client: true},
		{Name: "admin", CN: "kubernetes-admin", Orgs: []string{"system:masters"}, Client: true},
		{Name: "controller-manager", CN: "system:kube-controller-manager", Client: true},
		{Name: "scheduler", CN: "system:kube-scheduler", Client: true},
		{Name: "kube-proxy", CN: "system:kube-proxy", Client: true},
	}
	for _, n := range c.nodes() {
		specs = append(specs,
			certSpec{Name: n.Name + "-kubelet-client", CN: "system:node:" + n.Name, Orgs: []string{"system:nodes"}, Client: true},
			certSpec{Name: n.Name + "-kubelet-serving", CN: "system:node:" + n.Name, Orgs: []string{"system:nodes"},
				DNS: []string{n.Name}, IPs: []net.IP{n.IP.AsSlice()}, Server: true},
		)
	}
	for _, s := range specs {
		if err := ca.issue(dir, s); err != nil {
			return err
		}
	}
	if err := fp.issue(dir, certSpec{Name: "front-proxy-client", CN: "front-proxy-client", Client: true}); err != nil {
		return err
	}
	// Service-account token signing key pair.
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), sa); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644)
}

func newAuthority(dir, name, cn string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, name+".key"), key); err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func (a *authority) issue(dir string, s certSpec) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.CN, Organization: s.Orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     s.DNS,
		IPAddresses:  s.IPs,
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return fmt.Errorf("issue %s: %w", s.Name, err)
	}
	if err := writePEM(filepath.Join(dir, s.Name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, s.Name+".key"), key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func (c Config) pki(name string) string { return filepath.Join(c.pkiDir(), name) }

// writeKubeconfig writes a kubeconfig that authenticates with the named client cert.
func (c Config) writeKubeconfig(path, server, certName string) error {
	const tmpl = `apiVersion: v1
kind: Config
clusters:
- name: ambit
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: ambit
  context:
    cluster: ambit
    user: %s
current-context: ambit
`
	body := fmt.Sprintf(tmpl, server, c.pki("ca.crt"), certName,
		c.pki(certName+".crt"), c.pki(certName+".key"), certName)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o600)
}
