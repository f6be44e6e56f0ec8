package proxy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/internal/hbone"
	"github.com/ambit-mesh/ambit/internal/identity"
	"github.com/ambit-mesh/ambit/internal/netns"
)

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines(substr ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for l := range strings.Lines(b.buf.String()) {
		for _, s := range substr {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// TestPrivilegedTunnelToClosedPortIs503 opens, on one pooled HBONE
// connection from pod a to pod b's ztunnel, a good tunnel and then one to a
// port nothing in pod b listens on: the second is answered 503, logged and
// reported as refused, and the first tunnel, the shared connection and new
// tunnels are unaffected.
func TestPrivilegedTunnelToClosedPortIs503(t *testing.T) {
	tp, ctx, ca, hpa, hpb := twoPods(t)
	logs := &logBuffer{}
	zb := startTunedZtunnel(t, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)}, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	configure(zb)
	peers := echoServer(t, ctx, hpb, "8080")

	certs, err := identity.NewManager(identity.Config{TrustDomain: td, Issuer: identity.IssuerFunc(
		func(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
			return ca.SVID(t, id.String()), []*x509.Certificate{ca.Cert}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.SVID(ctx, idA); err != nil {
		t.Fatal(err)
	}
	var dials int
	var mu sync.Mutex
	client, err := hbone.NewClient(hbone.ClientConfig{SVIDs: certs, Bundles: certs,
		DialTCP: func(ctx context.Context, _ netip.Addr, dst netip.AddrPort) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			return hpa.Dial(ctx, dst.String(), netns.SocketOptions{Mark: DefaultMark})
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	tunnel := func(port uint16) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := client.Dial(dctx, hbone.Request{Source: idA, Destination: idB, SourceIP: ipA,
			Server: netip.AddrPortFrom(ipB, HBONEPort), Target: netip.AddrPortFrom(ipB, port)})
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { st.Close() })
		return st, nil
	}

	good, err := tunnel(8080)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := echo(good, "first"); err != nil || got != "first" {
		t.Fatalf("good tunnel: %q, %v", got, err)
	}
	<-peers

	_, err = tunnel(9999)
	var se *hbone.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !errors.Is(err, hbone.ErrUnreachable) {
		t.Fatalf("tunnel to a closed port: %v, want the server's 503", err)
	}
	if l := logs.lines("hbone request refused", "dst=10.77.2.2:9999", "status=503", "pod=b"); len(l) != 1 {
		t.Errorf("want one log line for the refusal, got %q", l)
	}
	if n := zb.obs.get(zb.obs.refused, Inbound); n != 1 {
		t.Errorf("refused inbound connections: %d, want 1 (the access log's line)", n)
	}

	if got, err := echo(good, "second"); err != nil || got != "second" {
		t.Fatalf("good tunnel after the 503: %q, %v", got, err)
	}
	again, err := tunnel(8080)
	if err != nil {
		t.Fatalf("new tunnel after the 503: %v", err)
	}
	if got, err := echo(again, "third"); err != nil || got != "third" {
		t.Fatalf("new tunnel after the 503: %q, %v", got, err)
	}
	<-peers
	mu.Lock()
	defer mu.Unlock()
	if dials != 1 {
		t.Errorf("the client opened %d connections, want 1: the 503 must not cost the shared connection", dials)
	}
}
