package proxy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// TestPrivilegedRestartKeepsConnectionsAndTakesNewOnes restarts each ztunnel
// as a rollout does: a new instance binds the pod's listeners beside the old
// one (SO_REUSEPORT), then the old one stops accepting and drains. A
// connection established before both restarts keeps carrying bytes
// throughout, new connections work within 1 s of each takeover, and they are
// served by the new instances.
func TestPrivilegedRestartKeepsConnectionsAndTakesNewOnes(t *testing.T) {
	tp, ctx, ca, hpa, hpb := twoPods(t)
	// Old instances drain longer than the test runs: the long-lived
	// connection must survive on the old ones, not be cut at the deadline.
	tune := func(c *Config) {
		c.DrainTimeout = time.Minute
		wa, wb, svc := workloads()
		c.Tables.UpsertWorkload(wa)
		c.Tables.UpsertWorkload(wb)
		c.Tables.UpsertService(svc)
	}
	podA := func() Pod {
		return Pod{UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a", Sockets: NewNetnsSockets(tp.handle(t, "pa"), DefaultMark)}
	}
	podB := func() Pod {
		return Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b", Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)}
	}
	za := startTunedZtunnel(t, ctx, ca, podA(), tune)
	zb := startTunedZtunnel(t, ctx, ca, podB(), tune)
	peers := echoServer(t, ctx, hpb, "8080")

	long := dial(t, hpa, "10.77.2.2:8080")
	if got, err := echo(long, "hello"); err != nil || got != "hello" {
		t.Fatalf("long-lived connection: %q, %v", got, err)
	}
	<-peers

	restart := func(name string, old *ztunnel, uid string, pod Pod, dir Direction) {
		t.Helper()
		fresh := startTunedZtunnel(t, ctx, ca, pod, tune) // binds beside old
		old.proxy.RemovePod(uid)                          // old stops accepting, drains
		took := time.Now()
		oldOpened := old.obs.get(old.obs.opened, dir)

		if got, err := echo(long, "during "+name); err != nil || got != "during "+name {
			t.Fatalf("long-lived connection after %s restarted: %q, %v", name, got, err)
		}
		// New connections: the first within 1 s, then every one.
		var first time.Duration
		for i := 0; i < 20; i++ {
			msg := fmt.Sprintf("new %d after %s restarted", i, name)
			dctx, dcancel := context.WithTimeout(ctx, time.Second)
			c, err := hpa.Dial(dctx, "10.77.2.2:8080", netns.SocketOptions{})
			dcancel()
			var got string
			if err == nil {
				got, err = echo(c, msg)
				c.Close()
			}
			if err == nil && got != msg {
				err = fmt.Errorf("got %q", got)
			}
			if first == 0 && err != nil && time.Since(took) < time.Second {
				i--
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatalf("new connection %d after %s restarted (%v after takeover): %v", i, name, time.Since(took), err)
			}
			if first == 0 {
				first = time.Since(took)
			}
			<-peers
		}
		t.Logf("%s restarted: first new connection served %v after takeover", name, first.Round(time.Millisecond))
		// The proxy reports a connection opened from its own goroutine, which may run
		// a moment after the client saw its echo: wait for the count, bounded.
		for deadline := time.Now().Add(2 * time.Second); fresh.obs.get(fresh.obs.opened, dir) < 20 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if n := fresh.obs.get(fresh.obs.opened, dir); n != 20 {
			t.Errorf("new %s instance opened %d connections, want 20", name, n)
		}
		if n := old.obs.get(old.obs.opened, dir); n != oldOpened {
			t.Errorf("old %s instance opened %d connections after it stopped accepting", name, n-oldOpened)
		}
		if n := old.proxy.Connections(); n != 1 {
			t.Errorf("old %s instance holds %d connections while draining, want the long-lived one", name, n)
		}
	}
	restart("destination ztunnel", zb, "pod-b", podB(), Inbound)
	restart("source ztunnel", za, "pod-a", podA(), Outbound)

	if got, err := echo(long, "after both"); err != nil || got != "after both" {
		t.Fatalf("long-lived connection after both restarts: %q, %v", got, err)
	}
}

// gatedSockets holds each connection accepted on the outbound port until
// the test opens the gate, so that the test can stop the pod in between:
// a connection accepted as the listeners close, which a rollout's
// takeover meets now and then.
type gatedSockets struct {
	Sockets
	accepted chan struct{} // one signal per held connection
	gate     chan struct{} // closed: let them through
}

func (g gatedSockets) Listen(ctx context.Context, port uint16) (net.Listener, error) {
	ln, err := g.Sockets.Listen(ctx, port)
	if err != nil || port != OutboundPort {
		return ln, err
	}
	return gatedListener{ln, g}, nil
}

type gatedListener struct {
	net.Listener
	g gatedSockets
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.g.accepted <- struct{}{}:
		default:
		}
		<-l.g.gate
	}
	return c, err
}

// TestPrivilegedConnectionAcceptedAsPodStopsIsServed: a connection the
// pod's listener accepted before the pod stopped is served through the
// drain, like any established one, not refused (its request unread, the
// client would see a reset).
func TestPrivilegedConnectionAcceptedAsPodStopsIsServed(t *testing.T) {
	tp, ctx, ca, hpa, hpb := twoPods(t)
	gs := gatedSockets{Sockets: NewNetnsSockets(tp.handle(t, "pa"), DefaultMark), accepted: make(chan struct{}, 1), gate: make(chan struct{})}
	za := startZtunnel(t, ctx, ca, Pod{UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a", Sockets: gs})
	zb := startZtunnel(t, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)})
	configure(za, zb)
	echoServer(t, ctx, hpb, "8080")

	const msg = "accepted as the pod stopped"
	type result struct {
		got string
		err error
	}
	done := make(chan result, 1)
	go func() {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		c, err := hpa.Dial(dctx, "10.77.2.2:8080", netns.SocketOptions{})
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		got, err := echo(c, msg)
		done <- result{got, err}
	}()
	select {
	case <-gs.accepted:
	case r := <-done:
		t.Fatalf("connection ended before ztunnel accepted it: %v", r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("ztunnel did not accept the connection")
	}
	za.proxy.RemovePod("pod-a") // cancels the pod, closes its listeners
	close(gs.gate)
	select {
	case r := <-done:
		if r.err != nil || r.got != msg {
			t.Fatalf("connection accepted before the pod stopped: %q, %v; want it served", r.got, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer through the stopping pod")
	}
}
