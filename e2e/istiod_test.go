package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ads "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	caapi "github.com/ambit-mesh/ambit/api/ca"
	"github.com/ambit-mesh/ambit/api/workload"
)

// istiodConn port-forwards istiod-lite's gRPC port and dials it with TLS, trusting the
// root istiod-lite publishes in ConfigMap istio-system/istio-ca-root-cert.
func istiodConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	root, err := cl.Kubectl(ctx, "", "-n", "istio-system", "get", "configmap", "istio-ca-root-cert", "-o", `jsonpath={.data.root-cert\.pem}`)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(root)) {
		t.Fatalf("no root in istio-ca-root-cert: %q", root)
	}
	pf := cl.KubectlCommand(ctx, "-n", "istio-system", "port-forward", "svc/istiod-lite", ":15012")
	out, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = pf.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("port-forward: %v", err)
	}
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("port-forward said %q", line)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "istiod-lite.istio-system.svc", MinVersion: tls.VersionTLS12})
	cc, err := grpc.NewClient("127.0.0.1:"+m[1], grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// fakeZtunnel runs a pod as istio-system/ztunnel on node and returns a token bound to
// it, as a real ztunnel's projected token would be.
func fakeZtunnel(t *testing.T, node string) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("e2e-fake-ztunnel-%d", time.Now().UnixMilli()%100000)
	manifest := fmt.Sprintf(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: ztunnel, namespace: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: istio-system, labels: {app: e2e-fake-ztunnel}}
spec:
  serviceAccountName: ztunnel
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: ambit.local/client:dev, imagePullPolicy: Never, args: [sleep]}]
`, name, node)
	if _, err := cl.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cl.Kubectl(ctx, "", "-n", "istio-system", "delete", "pod", name, "--wait=false") })
	if _, err := cl.Kubectl(ctx, "", "-n", "istio-system", "wait", "--for=condition=Ready", "--timeout=2m", "pod/"+name); err != nil {
		t.Fatal(err)
	}
	tok, err := cl.Kubectl(ctx, "", "-n", "istio-system", "create", "token", "ztunnel", "--audience", "istio-ca",
		"--bound-object-kind", "Pod", "--bound-object-name", name, "--duration", "10m")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(tok)
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func csrPEM(t *testing.T, id string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

const twoSleepers = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: local}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: remote}
---
apiVersion: v1
kind: Pod
metadata: {name: local, labels: {app: local}}
spec:
  serviceAccountName: local
  nodeSelector: {kubernetes.io/hostname: %[1]s}
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: ambit.local/client:dev, imagePullPolicy: Never, args: [sleep]}]
---
apiVersion: v1
kind: Pod
metadata: {name: remote, labels: {app: remote}}
spec:
  serviceAccountName: remote
  nodeSelector: {kubernetes.io/hostname: %[2]s}
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: ambit.local/client:dev, imagePullPolicy: Never, args: [sleep]}]
`

func TestIstiodCASignsOnlyIdentitiesOfTheCallersNode(t *testing.T) {
	ns := cl.NewNamespace(t)
	nodes := nodeNames(t)
	ns.Apply(fmt.Sprintf(twoSleepers, nodes[0], nodes[1]))
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/local", "pod/remote")
	token := fakeZtunnel(t, nodes[0])
	client := caapi.NewCertificateServiceClient(istiodConn(t))
	ctx, cancel := context.WithTimeout(withToken(context.Background(), token), time.Minute)
	defer cancel()

	local := "spiffe://cluster.local/ns/" + ns.Name + "/sa/local"
	resp, err := client.CreateCertificate(ctx, &caapi.CreateCertificateRequest{Csr: csrPEM(t, local), ImpersonatedIdentity: local})
	if err != nil {
		t.Fatalf("identity of a pod on the caller's node refused: %v", err)
	}
	if len(resp.CertChain) == 0 || len(resp.TrustBundle) == 0 {
		t.Fatalf("empty chain or bundle: %+v", resp)
	}
	remote := "spiffe://cluster.local/ns/" + ns.Name + "/sa/remote"
	_, err = client.CreateCertificate(ctx, &caapi.CreateCertificateRequest{Csr: csrPEM(t, remote), ImpersonatedIdentity: remote})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("identity of a pod on another node: got %v, want PermissionDenied", err)
	}
	_, err = client.CreateCertificate(context.Background(), &caapi.CreateCertificateRequest{Csr: csrPEM(t, local), ImpersonatedIdentity: local})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: got %v, want Unauthenticated", err)
	}
}

func TestIstiodPushesPolicyChangesToTheNodesZtunnel(t *testing.T) {
	ns := cl.NewNamespace(t)
	nodes := nodeNames(t)
	ns.Apply(fmt.Sprintf(twoSleepers, nodes[0], nodes[1]))
	ns.Wait(2*time.Minute, "--for=condition=Ready", "pod/local", "pod/remote")
	token := fakeZtunnel(t, nodes[0])
	ctx, cancel := context.WithTimeout(withToken(context.Background(), token), 2*time.Minute)
	defer cancel()
	stream, err := ads.NewAggregatedDiscoveryServiceClient(istiodConn(t)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{workload.AddressType, workload.AuthorizationType} {
		if err := stream.Send(&ads.DeltaDiscoveryRequest{Node: &core.Node{Id: "ztunnel~" + nodes[0]}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	// recvUntil reads (and ACKs) responses until one satisfies ok.
	recvUntil := func(what string, ok func(*ads.DeltaDiscoveryResponse) bool) {
		t.Helper()
		for {
			r, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			if err := stream.Send(&ads.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
				t.Fatal(err)
			}
			if ok(r) {
				return
			}
		}
	}
	names := func(r *ads.DeltaDiscoveryResponse) []string {
		var n []string
		for _, x := range r.Resources {
			n = append(n, x.Name)
		}
		return n
	}
	localUID := "Kubernetes//Pod/" + ns.Name + "/local"
	recvUntil("the local pod's workload", func(r *ads.DeltaDiscoveryResponse) bool {
		return r.TypeUrl == workload.AddressType && slices.Contains(names(r), localUID)
	})
	ns.Apply(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-local}
spec:
  selector: {matchLabels: {app: local}}
  rules: [{from: [{source: {namespaces: [same]}}]}]
`)
	policy := ns.Name + "/only-local"
	recvUntil("the new policy", func(r *ads.DeltaDiscoveryResponse) bool {
		return r.TypeUrl == workload.AuthorizationType && slices.Contains(names(r), policy)
	})
	// A ztunnel may not pose as another node's.
	other, err := ads.NewAggregatedDiscoveryServiceClient(istiodConn(t)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Send(&ads.DeltaDiscoveryRequest{Node: &core.Node{Id: "ztunnel~" + nodes[1]}, TypeUrl: workload.AddressType}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("subscribing as another node's ztunnel: got %v, want PermissionDenied", err)
	}
}

func TestIstiodWritesPolicyAndRouteStatus(t *testing.T) {
	ns := cl.NewNamespace(t)
	ns.Apply(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good}
spec:
  rules: [{to: [{operation: {ports: ["8080"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-port}
spec:
  rules: [{to: [{operation: {ports: ["http"]}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gamma}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [{name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: missing-backend}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules: [{backendRefs: [{name: nope, port: 80}]}]
`)
	for name, want := range map[string]string{"gamma": "True/True", "missing-backend": "True/False"} {
		ns.Eventually(time.Minute, name+" route status", func() error {
			out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "httproute", name, "-o",
				`jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}/{.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`)
			if err != nil || out != want {
				return fmt.Errorf("Accepted/ResolvedRefs = %q (%w), want %q", out, err, want)
			}
			return nil
		})
	}
	for name, want := range map[string]string{"good": "True/Accepted", "bad-port": "False/Invalid"} {
		ns.Eventually(time.Minute, name+" status", func() error {
			out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "authorizationpolicy", name, "-o",
				`jsonpath={.status.conditions[?(@.type=="Accepted")].status}/{.status.conditions[?(@.type=="Accepted")].reason}`)
			if err != nil || out != want {
				return fmt.Errorf("Accepted = %q (%w), want %q", out, err, want)
			}
			return nil
		})
	}
}

func TestIstiodDeploysWaypointForGateway(t *testing.T) {
	ns := cl.NewNamespace(t)
	ns.Apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`)
	ns.Eventually(time.Minute, "waypoint Deployment, Service and ServiceAccount owned by the Gateway", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "deployment/waypoint", "service/waypoint", "serviceaccount/waypoint",
			"-o", `jsonpath={range .items[*]}{.kind}:{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {end}`)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "Deployment:Gateway/waypoint Service:Gateway/waypoint ServiceAccount:Gateway/waypoint" {
			return fmt.Errorf("got %q", out)
		}
		return nil
	})
	ns.Eventually(time.Minute, "Gateway Accepted", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "gateway", "waypoint", "-o",
			`jsonpath={.status.conditions[?(@.type=="Accepted")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Accepted = %q (%w)", out, err)
		}
		return nil
	})
	// Programmed once the waypoint pod is Ready, with the Service's address in status:
	// the address clients use to reach the waypoint.
	ns.Kubectl("rollout", "status", "deployment/waypoint", "--timeout=2m")
	svcIP := strings.TrimSpace(ns.Kubectl("get", "service", "waypoint", "-o", "jsonpath={.spec.clusterIP}"))
	ns.Eventually(time.Minute, "Gateway Programmed with the waypoint Service's address", func() error {
		out, err := cl.Kubectl(context.Background(), "", "-n", ns.Name, "get", "gateway", "waypoint", "-o",
			`jsonpath={.status.conditions[?(@.type=="Programmed")].status} {.status.addresses[*].value}`)
		if err != nil {
			return err
		}
		if want := "True " + svcIP; strings.TrimSpace(out) != want {
			return fmt.Errorf("Programmed and addresses = %q, want %q", out, want)
		}
		return nil
	})
}

// Last: restarts istiod-lite.
func TestIstiodRootSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	read := func() string {
		out, err := cl.Kubectl(ctx, "", "-n", "istio-system", "get", "secret", "istio-ca-secret", "-o", `jsonpath={.data.ca-cert\.pem}`)
		if err != nil || out == "" {
			t.Fatalf("CA secret: %q %v", out, err)
		}
		return out
	}
	before := read()
	for _, args := range [][]string{
		{"rollout", "restart", "deployment/istiod-lite"},
		{"rollout", "status", "deployment/istiod-lite", "--timeout=2m"},
	} {
		if _, err := cl.Kubectl(ctx, "", append([]string{"-n", "istio-system"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	if read() != before {
		t.Fatal("the CA root changed across a restart")
	}
	root, err := cl.Kubectl(ctx, "", "-n", "istio-system", "get", "configmap", "istio-ca-root-cert", "-o", `jsonpath={.data.root-cert\.pem}`)
	if err != nil || !strings.Contains(root, "BEGIN CERTIFICATE") {
		t.Fatalf("published root: %q %v", root, err)
	}
}
