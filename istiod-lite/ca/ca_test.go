package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	caapi "github.com/ambit-mesh/ambit/api/ca"
	"github.com/ambit-mesh/ambit/istiod-lite/authn"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func newAuthority(t testing.TB) (*Authority, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	a, err := LoadOrCreate(context.Background(), client, AuthorityConfig{Namespace: "istio-system", TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return a, client
}

func csrFor(t testing.TB, key any, uris ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verify checks a chain against the authority's roots and returns the leaf.
func verify(t *testing.T, a *Authority, chain []string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for _, p := range chain {
		c, err := parseCerts([]byte(p))
		if err != nil || len(c) != 1 {
			t.Fatalf("bad chain element: %v", err)
		}
		certs = append(certs, c[0])
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: a.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	return certs[0]
}

func TestRootIsCreatedOnceAndReused(t *testing.T) {
	a, client := newAuthority(t)
	b, err := LoadOrCreate(context.Background(), client, AuthorityConfig{Namespace: "istio-system", TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	if a.RootsPEM()[0] != b.RootsPEM()[0] {
		t.Error("a restart produced a different root")
	}
	s, err := client.CoreV1().Secrets("istio-system").Get(context.Background(), SelfSignedSecret, metav1.GetOptions{})
	if err != nil || len(s.Data[KeyCAKey]) == 0 {
		t.Fatalf("root secret: %v", err)
	}
}

func TestPluggedIntermediateSigns(t *testing.T) {
	rootKey, interKey := p256(t), p256(t)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "root"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * 365 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "intermediate"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * 30 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	interDER, _ := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
	pemCert := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: PluggedSecret},
		Data: map[string][]byte{
			KeyCACert: pemCert(interDER), KeyCAKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
			KeyRootCert: pemCert(rootDER), KeyCertChain: append(pemCert(interDER), pemCert(rootDER)...),
		},
	})
	a, err := LoadOrCreate(context.Background(), client, AuthorityConfig{Namespace: "istio-system", TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/app/sa/echo")
	chain, err := a.Sign([]byte(csrFor(t, p256(t), id.String())), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(chain))
	}
	verify(t, a, chain)
	if _, err := client.CoreV1().Secrets("istio-system").Get(context.Background(), SelfSignedSecret, metav1.GetOptions{}); err == nil {
		t.Error("a self-signed root was created although an intermediate is plugged in")
	}
}

func TestSignChecksTheCSR(t *testing.T) {
	a, _ := newAuthority(t)
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/app/sa/echo")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, csr, wantErr string
	}{
		{"other identity in CSR", csrFor(t, p256(t), "spiffe://cluster.local/ns/app/sa/other"), "asks for"},
		{"two SANs", csrFor(t, p256(t), id.String(), "spiffe://cluster.local/ns/x/sa/y"), "exactly one SAN"},
		{"not a SPIFFE ID", csrFor(t, p256(t), "https://example.com/x"), "SAN"},
		{"RSA key", csrFor(t, rsaKey, id.String()), "ECDSA P-256"},
		{"not PEM", "garbage", "no PEM"},
		{"huge", strings.Repeat("A", maxCSRBytes+1), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Sign([]byte(tt.csr), id, time.Hour)
			if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want ErrBadCSR containing %q", err, tt.wantErr)
			}
		})
	}
	chain, err := a.Sign([]byte(csrFor(t, p256(t), id.String())), id, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := verify(t, a, chain)
	if got, err := spiffeid.FromURI(leaf.URIs[0]); err != nil || got != id {
		t.Errorf("leaf identity %v (%v)", got, err)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 24*time.Hour || d > 24*time.Hour+2*time.Minute {
		t.Errorf("lifetime %v, want 24h", d)
	}
}

// Test doubles for the service's consumed interfaces.
type fixedCaller struct {
	c   *authn.Caller
	err error
}

func (f fixedCaller) Authenticate(context.Context) (*authn.Caller, error) { return f.c, f.err }

type podsByNode map[string][]*corev1.Pod

func (p podsByNode) PodsOnNode(node string) []*corev1.Pod { return p[node] }

func runningPod(ns, name, sa, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func TestCreateCertificateAuthorization(t *testing.T) {
	a, _ := newAuthority(t)
	pods := podsByNode{
		"node-a": {runningPod("app", "echo-a", "echo", "node-a")},
		"node-b": {runningPod("app", "db", "db", "node-b")},
	}
	ztunnelA := &authn.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: "ztunnel-a", Node: "node-a"}
	tests := []struct {
		name        string
		caller      *authn.Caller
		authErr     error
		impersonate string
		csrID       string
		want        codes.Code
	}{
		{name: "ztunnel for a pod on its node", caller: ztunnelA, impersonate: "spiffe://cluster.local/ns/app/sa/echo", want: codes.OK},
		{name: "ztunnel for a pod on another node", caller: ztunnelA, impersonate: "spiffe://cluster.local/ns/app/sa/db", want: codes.PermissionDenied},
		{name: "ztunnel for a foreign trust domain", caller: ztunnelA, impersonate: "spiffe://evil.org/ns/app/sa/echo", want: codes.PermissionDenied},
		{name: "ztunnel without node binding", caller: &authn.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"}, impersonate: "spiffe://cluster.local/ns/app/sa/echo", want: codes.PermissionDenied},
		{name: "waypoint for its own identity", caller: &authn.Caller{Namespace: "app", ServiceAccount: "waypoint", Node: "node-b"}, csrID: "spiffe://cluster.local/ns/app/sa/waypoint", want: codes.OK},
		{name: "waypoint for another identity", caller: &authn.Caller{Namespace: "app", ServiceAccount: "waypoint", Node: "node-a"}, impersonate: "spiffe://cluster.local/ns/app/sa/echo", want: codes.PermissionDenied},
		{name: "own identity but CSR for another", caller: &authn.Caller{Namespace: "app", ServiceAccount: "waypoint"}, csrID: "spiffe://cluster.local/ns/app/sa/echo", want: codes.InvalidArgument},
		{name: "unauthenticated", authErr: authn.ErrUnauthenticated, want: codes.Unauthenticated},
		{name: "malformed impersonated identity", caller: ztunnelA, impersonate: "not a uri", want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := NewService(ServiceConfig{Authority: a, Authn: fixedCaller{tt.caller, tt.authErr}, Pods: pods, NodeProxies: []string{"istio-system/ztunnel"}})
			id := tt.csrID
			if id == "" {
				id = tt.impersonate
			}
			if id == "" || strings.Contains(id, " ") {
				id = "spiffe://cluster.local/ns/x/sa/y"
			}
			resp, err := svc.CreateCertificate(context.Background(), &caapi.CreateCertificateRequest{
				Csr: csrFor(t, p256(t), id), ImpersonatedIdentity: tt.impersonate,
			})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if err == nil {
				verify(t, a, resp.CertChain)
				if len(resp.TrustBundle) != 1 {
					t.Errorf("trust bundle has %d roots", len(resp.TrustBundle))
				}
			}
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	f.Add([]byte(csrFor(f, p256(f), "spiffe://cluster.local/ns/a/sa/b")))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, id, err := ParseCSR(b)
		if err == nil && (csr == nil || id.IsZero()) {
			t.Fatal("accepted a CSR without identity")
		}
		if err != nil && !errors.Is(err, ErrBadCSR) {
			t.Fatalf("error not marked ErrBadCSR: %v", err)
		}
	})
}
