package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
	"github.com/ambit-mesh/ambit/ztunnel/authz"
	"github.com/ambit-mesh/ambit/ztunnel/state"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("cluster.local")
	idA   = spiffeid.RequireFromString("spiffe://cluster.local/ns/ns-a/sa/sa-a")
	idB   = spiffeid.RequireFromString("spiffe://cluster.local/ns/ns-b/sa/sa-b")
	ipA   = netip.MustParseAddr("10.77.1.2")
	ipB   = netip.MustParseAddr("10.77.2.2")
	vip   = netip.MustParseAddr("10.96.0.10")
	nodeB = netip.MustParseAddr("192.168.77.2")
)

const svcKey = "ns-b/echo.ns-b.svc.cluster.local"

func workloads() (*state.Workload, *state.Workload, *state.Service) {
	wa := &state.Workload{UID: "pod-a", Name: "a", Namespace: "ns-a", Addresses: []netip.Addr{ipA}, HBONE: true,
		Identity: idA, Healthy: true, ServiceAccount: "sa-a"}
	wb := &state.Workload{UID: "pod-b", Name: "b", Namespace: "ns-b", Addresses: []netip.Addr{ipB}, HBONE: true,
		Identity: idB, Healthy: true, ServiceAccount: "sa-b", Services: map[string][]state.Port{svcKey: {{ServicePort: 80, TargetPort: 8080}}}}
	svc := &state.Service{Name: "echo", Namespace: "ns-b", Hostname: "echo.ns-b.svc.cluster.local",
		VIPs: []netip.Addr{vip}, Ports: []state.Port{{ServicePort: 80, TargetPort: 8080}}}
	return wa, wb, svc
}

// counter is an Observer counting what the proxy reports.
type counter struct {
	mu                      sync.Mutex
	opened, closed, refused map[Direction]int
	sent, received          map[Direction]int64 // the bytes reported, Progress's and Closed's
}

func newCounter() *counter {
	return &counter{opened: map[Direction]int{}, closed: map[Direction]int{}, refused: map[Direction]int{},
		sent: map[Direction]int64{}, received: map[Direction]int64{}}
}
func (c *counter) Opened(i *ConnInfo) { c.mu.Lock(); c.opened[i.Direction]++; c.mu.Unlock() }
func (c *counter) Progress(i *ConnInfo, b Bytes) {
	c.mu.Lock()
	c.sent[i.Direction] += b.Sent
	c.received[i.Direction] += b.Received
	c.mu.Unlock()
}

// bytes returns the sums of the bytes reported for direction d.
func (c *counter) bytes(d Direction) (sent, received int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[d], c.received[d]
}
func (c *counter) Closed(i *ConnInfo, _, unreported Bytes, _ error) {
	c.mu.Lock()
	c.closed[i.Direction]++
	c.sent[i.Direction] += unreported.Sent
	c.received[i.Direction] += unreported.Received
	c.mu.Unlock()
}
func (c *counter) Refused(i *ConnInfo, _ error) { c.mu.Lock(); c.refused[i.Direction]++; c.mu.Unlock() }
func (c *counter) get(m map[Direction]int, d Direction) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[d]
}

// ztunnel is one ztunnel under test.
type ztunnel struct {
	tables *state.Tables
	proxy  *Proxy
	obs    *counter
}

// startZtunnel runs a proxy serving pod with certificates from ca.
func startZtunnel(t testing.TB, ctx context.Context, ca *hbonetest.CA, pod Pod) *ztunnel {
	return startTunedZtunnel(t, ctx, ca, pod, nil)
}

// echoServer serves echo on port inside h and reports client addresses.
// configure gives each ztunnel the test workloads (pods a and b) and the
// service.
func configure(zs ...*ztunnel) {
	wa, wb, svc := workloads()
	for _, z := range zs {
		z.tables.UpsertWorkload(wa)
		z.tables.UpsertWorkload(wb)
		z.tables.UpsertService(svc)
	}
}

func echoServer(t testing.TB, ctx context.Context, h *netns.Handle, port string) <-chan netip.AddrPort {
	ln, err := h.Listen(ctx, ":"+port, netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan netip.AddrPort, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case peers <- addrOf(c.RemoteAddr()):
			default:
			}
			wg.Go(func() { defer c.Close(); _, _ = io.Copy(c, c) })
		}
	})
	return peers
}

func dial(t *testing.T, h *netns.Handle, dst string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, dst, netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg and returns what came back (or the error).
func echo(c net.Conn, msg string) (string, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

// refused checks that c is refused: closed or reset with no data back. It
// closes c, as a client would: a client that keeps a reset socket open can
// have the kernel reuse its port for the next connection, whose SYN then
// meets the stale conntrack entry.
func refused(t *testing.T, c net.Conn) {
	t.Helper()
	got, err := echo(c, "anyone there?")
	c.Close()
	if err == nil {
		t.Fatalf("connection was served (%q), want refused", got)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection hung instead of being refused")
	}
}

func allowOnly(t *testing.T, principal string) *authz.Policy {
	p, err := authz.Decode(&workload.Authorization{Name: "allow", Namespace: "ns-b", Scope: workload.Scope_WORKLOAD_SELECTOR,
		Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{
			Principals: []*workload.StringMatch{{MatchType: &workload.StringMatch_Exact{Exact: principal}}}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func strict(t *testing.T) *authz.Policy {
	p, err := authz.Decode(&workload.Authorization{Name: "converted_peer_authentication_strict", Namespace: "ns-b",
		Scope: workload.Scope_NAMESPACE, Action: workload.Action_DENY,
		Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{
			NotPrincipals: []*workload.StringMatch{{MatchType: &workload.StringMatch_Presence{Presence: true}}}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrivilegedPodToPodThroughTwoZtunnels(t *testing.T) {
	privtest.Require(t)
	tp := newTopology(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	ca := hbonetest.NewCA(t, "cluster.local")
	hpa, hpb, hnb := tp.handle(t, "pa"), tp.handle(t, "pb"), tp.handle(t, "nb")
	t.Cleanup(func() { hpa.Close(); hpb.Close(); hnb.Close() })
	za := startZtunnel(t, ctx, ca, Pod{UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a",
		Sockets: NewNetnsSockets(tp.handle(t, "pa"), DefaultMark)})
	zb := startZtunnel(t, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)})
	wa, wb, svc := workloads()
	for _, z := range []*ztunnel{za, zb} {
		z.tables.UpsertWorkload(wa)
		z.tables.UpsertWorkload(wb)
		z.tables.UpsertService(svc)
	}
	peers := echoServer(t, ctx, hpb, "8080")
	plain := echoServer(t, ctx, hnb, "9000") // an unmeshed server on node b
	link := sniff(t, tp.handle(t, "na"), "link0")

	t.Run("HBONE carries the payload encrypted, source preserved", func(t *testing.T) {
		secret := "AMBIT-SECRET-PAYLOAD-7f3a9c"
		c := dial(t, hpa, "10.77.2.2:8080")
		if got, err := echo(c, secret); err != nil || got != secret {
			t.Fatalf("echo through two ztunnels: %q, %v", got, err)
		}
		if p := <-peers; p.Addr() != ipA {
			t.Errorf("server saw the client as %s, want %s", p, ipA)
		}
		// The encrypted echo is on the link once the client has it back; the
		// capture's reader may lag, so wait for what the reply's TLS record
		// must at least have put there before judging.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, n, _ := link.seen(nil); n >= 2*len(secret) {
				break
			}
		}
		frames, bytes, leaked := link.seen([]byte(secret))
		if frames == 0 || bytes < len(secret) {
			t.Fatalf("capture saw %d frames: the capture does not work", frames)
		}
		if leaked {
			t.Fatalf("plaintext payload seen on the link between the nodes")
		}
		t.Logf("capture: %d frames, %d bytes, no plaintext", frames, bytes)
	})

	t.Run("sockets inside a pod have no TCP keepalive", func(t *testing.T) {
		c := dial(t, hpa, "10.77.2.2:8080")
		if got, err := echo(c, "keepalive?"); err != nil || got != "keepalive?" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		<-peers
		// ss shows an armed keepalive timer as timer:(keepalive,...). The
		// app's own accepted socket has one (Go's default), which shows the
		// check can see it; ztunnel's accepted socket on 15001 in pod a and
		// its dial to the app in pod b must not.
		for _, tc := range []struct {
			pod, filter string
			keepalive   bool
		}{
			{"pa", "( sport = :15001 )", false},
			{"pb", "( dport = :8080 )", false},
			{"pb", "( sport = :8080 )", true},
		} {
			out, err := exec.Command("ip", "netns", "exec", tp.ns(tc.pod), "ss", "-tnoH", "state", "established", tc.filter).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) == 0 {
				t.Fatalf("ss in %s %s: %v\n%s", tc.pod, tc.filter, err, out)
			}
			if got := bytes.Contains(out, []byte("keepalive")); got != tc.keepalive {
				t.Errorf("in %s, sockets %s: keepalive timer %v, want %v:\n%s", tc.pod, tc.filter, got, tc.keepalive, out)
			}
		}
	})

	t.Run("Service VIP goes to an endpoint over HBONE", func(t *testing.T) {
		c := dial(t, hpa, "10.96.0.10:80")
		if got, err := echo(c, "via the VIP"); err != nil || got != "via the VIP" {
			t.Fatalf("echo via VIP: %q, %v", got, err)
		}
		<-peers
		_, _, leaked := link.seen([]byte("via the VIP"))
		if leaked {
			t.Fatal("plaintext seen on the link")
		}
	})

	t.Run("unmeshed destination is passed through", func(t *testing.T) {
		c := dial(t, hpa, netip.AddrPortFrom(nodeB, 9000).String())
		if got, err := echo(c, "plain-passthrough"); err != nil || got != "plain-passthrough" {
			t.Fatalf("passthrough: %q, %v", got, err)
		}
		if p := <-plain; p.Addr() != ipA {
			t.Errorf("unmeshed server saw %s, want the pod %s", p, ipA)
		}
		if !link.waitSeen([]byte("plain-passthrough")) {
			t.Error("passthrough traffic should cross the link in plaintext")
		}
	})

	t.Run("wrong server identity is refused", func(t *testing.T) {
		wrong := *wb
		wrong.Identity = spiffeid.RequireFromString("spiffe://cluster.local/ns/ns-b/sa/impostor")
		za.tables.UpsertWorkload(&wrong)
		defer za.tables.UpsertWorkload(wb)
		refused(t, dial(t, hpa, "10.77.2.2:8080"))
	})

	t.Run("ALLOW admits X and refuses Y", func(t *testing.T) {
		opened := zb.obs.get(zb.obs.opened, Inbound)
		zb.tables.UpsertPolicy(allowOnly(t, "cluster.local/ns/ns-a/sa/someone-else"))
		w := *wb
		w.Policies = []string{"ns-b/allow"}
		zb.tables.UpsertWorkload(&w)
		refused(t, dial(t, hpa, "10.77.2.2:8080"))
		if n := zb.obs.get(zb.obs.opened, Inbound); n != opened {
			t.Errorf("a denied connection was counted as opened (%d -> %d)", opened, n)
		}
		zb.tables.UpsertPolicy(allowOnly(t, "cluster.local/ns/ns-a/sa/sa-a"))
		if got, err := echo(dial(t, hpa, "10.77.2.2:8080"), "allowed"); err != nil || got != "allowed" {
			t.Fatalf("allowed principal: %q, %v", got, err)
		}
		<-peers
		if n := zb.obs.get(zb.obs.opened, Inbound); n != opened+1 {
			t.Errorf("opened inbound %d -> %d, want +1", opened, n)
		}
		zb.tables.UpsertWorkload(wb)
		zb.tables.Remove("ns-b/allow")
	})

	t.Run("PERMISSIVE accepts plaintext, STRICT refuses it", func(t *testing.T) {
		if got, err := echo(dial(t, hnb, "10.77.2.2:8080"), "plaintext in"); err != nil || got != "plaintext in" {
			t.Fatalf("plaintext under PERMISSIVE: %q, %v", got, err)
		}
		<-peers
		zb.tables.UpsertPolicy(strict(t))
		defer zb.tables.Remove("ns-b/converted_peer_authentication_strict")
		refused(t, dial(t, hnb, "10.77.2.2:8080"))
		// mTLS still works under STRICT.
		if got, err := echo(dial(t, hpa, "10.77.2.2:8080"), "mtls"); err != nil || got != "mtls" {
			t.Fatalf("HBONE under STRICT: %q, %v", got, err)
		}
		<-peers
	})

	t.Run("bytes are reported while a connection is open, each once", func(t *testing.T) {
		type side struct {
			z   *ztunnel
			dir Direction
		}
		sides := []side{{za, Outbound}, {zb, Inbound}}
		// The earlier subtests' connections report their last bytes as
		// they close: wait until they have.
		for deadline := time.Now().Add(5 * time.Second); za.proxy.Connections()+zb.proxy.Connections() > 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d and %d connections still open", za.proxy.Connections(), zb.proxy.Connections())
			}
		}
		var base [2][2]int64
		for i, sd := range sides {
			base[i][0], base[i][1] = sd.z.obs.bytes(sd.dir)
		}
		closedBefore := zb.obs.get(zb.obs.closed, Inbound)
		// reported waits until each ztunnel has reported sent and received
		// bytes of this connection, asking as a scrape does.
		reported := func(sent, received int64) {
			t.Helper()
			for i, sd := range sides {
				var s, r int64
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					sd.z.proxy.ReportProgress()
					s, r = sd.z.obs.bytes(sd.dir)
					s, r = s-base[i][0], r-base[i][1]
					if s == sent && r == received || time.Now().After(deadline) {
						break
					}
				}
				if s != sent || r != received {
					t.Fatalf("%s reported %d bytes sent and %d received, want %d and %d", sd.dir, s, r, sent, received)
				}
			}
		}
		c := dial(t, hpa, "10.77.2.2:8080")
		msg := strings.Repeat("m", 3000)
		if got, err := echo(c, msg); err != nil || got != msg {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
		<-peers
		reported(3000, 3000) // open: what a scrape would count
		reported(3000, 3000) // asked again, nothing new: nothing added
		if got, err := echo(c, "tail"); err != nil || got != "tail" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		c.Close()
		for deadline := time.Now().Add(5 * time.Second); zb.obs.get(zb.obs.closed, Inbound) == closedBefore; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the connection did not close")
			}
		}
		reported(3004, 3004) // the close reported the rest, and nothing twice
	})

	t.Run("policy change closes an open connection", func(t *testing.T) {
		c := dial(t, hpa, "10.77.2.2:8080")
		if got, err := echo(c, "before"); err != nil || got != "before" {
			t.Fatalf("before: %q, %v", got, err)
		}
		<-peers
		zb.tables.UpsertPolicy(denyNsA(t))
		defer zb.tables.Remove("ns-b/deny-a")
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("open connection after a DENY policy: read %v, want it closed", err)
		}
	})
}

// denyNsA is policy "ns-b/deny-a": DENY everything from namespace ns-a.
func denyNsA(t testing.TB) *authz.Policy {
	t.Helper()
	deny, err := authz.Decode(&workload.Authorization{Name: "deny-a", Namespace: "ns-b", Scope: workload.Scope_NAMESPACE,
		Action: workload.Action_DENY, Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{
			Namespaces: []*workload.StringMatch{{MatchType: &workload.StringMatch_Exact{Exact: "ns-a"}}}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return deny
}
