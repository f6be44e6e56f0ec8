package main

import (
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
)

func TestLoadSnapshot(t *testing.T) {
	snap, err := loadSnapshot("testdata/snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Services) != 1 || len(snap.Routes) != 1 || snap.Routes[0].Name != "echo" ||
		snap.Workloads[0].Services["demo/echo"][80] != 8080 || len(snap.Policies[0].Rules) != 1 {
		t.Fatalf("snapshot parsed wrong: %+v", snap)
	}
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

func writePEM(t *testing.T, path, typ string, ders ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunServesHealthAfterConfig(t *testing.T) {
	ca := hbonetest.NewCA(t, "cluster.local")
	svid := ca.SVID(t, "spiffe://cluster.local/ns/demo/sa/waypoint")
	dir := t.TempDir()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePEM(t, filepath.Join(dir, "bundle.pem"), "CERTIFICATE", ca.Cert.Raw)
	args := []string{
		"-identity", "spiffe://cluster.local/ns/demo/sa/waypoint",
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-bundle", filepath.Join(dir, "bundle.pem"), "-config", "testdata/snapshot.json",
		"-hbone-addr", freeAddr(t), "-metrics-addr", "-", "-admin-addr", "-",
	}
	health := freeAddr(t)
	args = append(args, "-health-addr", health)
	o, err := parseFlags(args, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + health + "/healthz/ready")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			t.Fatalf("health: %d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // waiting for the listener, not for correctness
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-identity", "spiffe://cluster.local/ns/a/sa/b"},
		{"-identity", "x", "-cert", "c", "-key", "k", "-bundle", "b", "-trace-sampling", "2"},
	} {
		if _, err := parseFlags(args, func(string) string { return "" }); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestParseFlagsInClusterFromDeployerEnv(t *testing.T) {
	env := map[string]string{
		"POD_NAMESPACE": "demo", "SERVICE_ACCOUNT": "waypoint", "GATEWAY_NAME": "waypoint",
		"CONTROL_PLANE_ADDR": "istiod-lite.istio-system.svc:15012", "TRUST_DOMAIN": "cluster.local",
		"TOKEN_PATH": "/var/run/secrets/tokens/istio-token", "ROOT_CERT_PATH": "/var/run/secrets/istio/root-cert.pem",
		"XDS_NODE_ID": "waypoint~demo~waypoint",
	}
	o, err := parseFlags(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.static() || o.cluster.Gateway != "waypoint" || o.cluster.NodeID != "waypoint~demo~waypoint" || o.cluster.TokenFile != env["TOKEN_PATH"] {
		t.Errorf("options: %+v", o)
	}
	env["XDS_NODE_ID"] = "waypoint~demo~other"
	if _, err := parseFlags(nil, func(k string) string { return env[k] }); err == nil {
		t.Error("a node id naming another gateway was accepted")
	}
	if _, err := parseFlags([]string{"-config", "x.json"}, func(k string) string { return env[k] }); err == nil {
		t.Error("-config without -cert was accepted")
	}
}
