package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
)

var podID = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")

// testIssuer issues from an hbonetest CA (valid hbonetest.Validity) and can be
// made to fail.
type testIssuer struct {
	t       *testing.T
	ca      *hbonetest.CA
	calls   atomic.Int32
	failing atomic.Bool
}

func (i *testIssuer) Issue(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*x509.Certificate, error) {
	i.calls.Add(1)
	if i.failing.Load() {
		return nil, nil, errors.New("CA down")
	}
	return i.ca.SVID(i.t, id.String()), []*x509.Certificate{i.ca.Cert}, nil
}

func newManager(t *testing.T, is Issuer) *Manager {
	m, err := NewManager(Config{Issuer: is, TrustDomain: podID.TrustDomain()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSVIDFetchesOnceForConcurrentCallers(t *testing.T) {
	is := &testIssuer{t: t, ca: hbonetest.NewCA(t, "cluster.local")}
	m := newManager(t, is)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := m.SVID(context.Background(), podID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := is.calls.Load(); n != 1 {
		t.Errorf("issuer called %d times, want 1", n)
	}
	b, err := m.GetX509BundleForTrustDomain(podID.TrustDomain())
	if err != nil || len(b.X509Authorities()) != 1 {
		t.Errorf("bundle after issuance: %v, %v", b, err)
	}
}

func TestRenewsAtHalfLifeAndKeepsOldOnFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := &testIssuer{t: t, ca: hbonetest.NewCA(t, "cluster.local")}
		m := newManager(t, is)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		first, err := m.SVID(ctx, podID)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(hbonetest.Validity/2 - 2*time.Minute) // before half life: nothing
		synctest.Wait()
		if n := is.calls.Load(); n != 1 {
			t.Fatalf("renewed early: %d calls", n)
		}
		is.failing.Store(true)
		time.Sleep(5 * time.Minute) // past half life: renewal fails, old one serves
		synctest.Wait()
		if n := is.calls.Load(); n < 2 {
			t.Fatalf("no renewal attempt past half life: %d calls", n)
		}
		if sv, err := m.SVID(ctx, podID); err != nil || sv != first {
			t.Fatalf("after a failed renewal: %v, %v (want the old certificate)", sv, err)
		}
		is.failing.Store(false)
		time.Sleep(2 * time.Minute) // the retry succeeds
		synctest.Wait()
		if sv, err := m.SVID(ctx, podID); err != nil || sv == first {
			t.Fatalf("after recovery: same=%v, %v", sv == first, err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestSVIDFailsWhenIssuerFails(t *testing.T) {
	is := &testIssuer{t: t, ca: hbonetest.NewCA(t, "cluster.local")}
	is.failing.Store(true)
	m := newManager(t, is)
	if _, err := m.SVID(context.Background(), podID); !errors.Is(err, ErrNotReady) {
		t.Fatalf("SVID with a failing CA: %v", err)
	}
}

func TestTokenCredentialsReadTheFileAtEveryCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "istio-token")
	creds := TokenCredentials{File: path}
	if _, err := creds.GetRequestMetadata(context.Background()); err == nil {
		t.Fatal("missing token file accepted")
	}
	for _, tok := range []string{"first", "rotated"} {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		md, err := creds.GetRequestMetadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := md["authorization"]; got != "Bearer "+tok {
			t.Errorf("authorization = %q, want Bearer %s", got, tok)
		}
	}
	if !creds.RequireTransportSecurity() {
		t.Error("a bearer token must require transport security")
	}
}

func TestCurrentNeverFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := &testIssuer{t: t, ca: hbonetest.NewCA(t, "cluster.local")}
		m := newManager(t, is)
		if sv := m.Current(podID); sv != nil || is.calls.Load() != 0 {
			t.Fatalf("before any fetch: %v, %d issuer calls; want nil and none", sv, is.calls.Load())
		}
		sv, err := m.SVID(context.Background(), podID)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Current(podID); got != sv {
			t.Fatalf("after a fetch: %v, want the fetched certificate", got)
		}
		time.Sleep(hbonetest.Validity + time.Minute) // expired, and nothing renewed it
		if got := m.Current(podID); got != nil {
			t.Fatalf("an expired certificate is current: %v", got.ID)
		}
		if n := is.calls.Load(); n != 1 {
			t.Errorf("issuer called %d times, want 1", n)
		}
	})
}
