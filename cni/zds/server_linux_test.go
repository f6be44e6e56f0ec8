package zds_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
	"github.com/ambit-mesh/ambit/cni/netns"
	"github.com/ambit-mesh/ambit/cni/zds"
	"github.com/ambit-mesh/ambit/cni/zds/zdstest"
)

// start runs a server on a socket in a temporary directory until the test ends.
func start(t *testing.T, ackTimeout time.Duration, opts ...func(*zds.Server)) (*zds.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	s := zds.NewServer(path, ackTimeout, "", slog.New(slog.DiscardHandler))
	for _, o := range opts {
		o(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for range 100 {
		if _, err := os.Stat(path); err == nil {
			return s, path
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("socket never appeared")
	return nil, ""
}

// ownNetns opens the test's own network namespace, a stand-in for a pod's.
func ownNetns(t *testing.T) *os.File {
	t.Helper()
	f, err := netns.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func workload(t *testing.T, uid string) zds.Workload {
	return zds.Workload{UID: uid, Info: &zdsapi.WorkloadInfo{Name: "pod-" + uid, Namespace: "demo", ServiceAccount: "sa"}, Netns: ownNetns(t)}
}

// expect reads one request, checks its short form, and acks it with errMsg.
func expect(t *testing.T, cl *zdstest.Client, want, errMsg string) {
	t.Helper()
	req, f, err := cl.Recv(2 * time.Second)
	if err != nil {
		t.Fatalf("waiting for %q: %v", want, err)
	}
	if got := zdstest.Event(req); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if f != nil {
		if err := netns.Check(f); err != nil {
			t.Errorf("%s: passed descriptor: %v", want, err)
		}
		if req.GetAdd().GetWorkloadInfo().GetNamespace() != "demo" {
			t.Errorf("%s: workload info %v", want, req.GetAdd().GetWorkloadInfo())
		}
		f.Close()
	}
	if err := cl.Ack(errMsg); err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, path string) *zdstest.Client {
	t.Helper()
	cl, err := zdstest.Dial(path)
	// The socket file appears at bind, a moment before listen: refused until then.
	for i := 0; errors.Is(err, syscall.ECONNREFUSED) && i < 200; i++ {
		time.Sleep(10 * time.Millisecond)
		cl, err = zdstest.Dial(path)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func waitConnected(t *testing.T, s *zds.Server, want bool) {
	t.Helper()
	for range 200 {
		if s.Connected() == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("Connected() never became %v", want)
}

// async runs f and returns its error on a channel.
func async(f func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- f() }()
	return c
}

func TestSnapshotThenLiveUpdatesThenReplayOnReconnect(t *testing.T) {
	s, path := start(t, 2*time.Second)
	if err := s.Add(workload(t, "a")); err != nil {
		t.Fatal(err)
	}
	s.Keep("k", nil)

	cl := dial(t, path)
	expect(t, cl, "add a", "")
	expect(t, cl, "keep k", "")
	expect(t, cl, "snapshot", "")
	waitConnected(t, s, true)

	done := addAsync(s, workload(t, "b"))
	expect(t, cl, "add b", "")
	if err := <-done; err != nil {
		t.Fatalf("live Add: %v", err)
	}
	done = async(func() error { return s.Del("a") })
	expect(t, cl, "del a", "")
	if err := <-done; err != nil {
		t.Fatalf("live Del: %v", err)
	}
	if err := s.Del("never-added"); err != nil {
		t.Errorf("Del of unknown uid: %v", err)
	}

	// ztunnel restarts: the new connection gets the current state, nothing doubled.
	cl.Close()
	waitConnected(t, s, false)
	cl2 := dial(t, path)
	expect(t, cl2, "add b", "")
	expect(t, cl2, "keep k", "")
	expect(t, cl2, "snapshot", "")
	waitConnected(t, s, true)
}

func TestRejectedAddIsNotKept(t *testing.T) {
	s, path := start(t, 2*time.Second)
	cl := dial(t, path)
	expect(t, cl, "snapshot", "")
	waitConnected(t, s, true)
	done := addAsync(s, workload(t, "x"))
	expect(t, cl, "add x", "no such pod")
	if err := <-done; !errors.Is(err, zds.ErrRejected) {
		t.Fatalf("Add = %v, want ErrRejected", err)
	}
	if s.Has("x") {
		t.Error("rejected workload kept")
	}
}

func TestSilentZtunnelIsDroppedAndAddStillRecorded(t *testing.T) {
	s, path := start(t, 200*time.Millisecond)
	cl := dial(t, path)
	expect(t, cl, "snapshot", "")
	waitConnected(t, s, true)
	// Read the add but never ack it.
	done := addAsync(s, workload(t, "y"))
	if _, f, err := cl.Recv(2 * time.Second); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("Add with a silent ztunnel = %v, want nil (sent in the next snapshot)", err)
	}
	waitConnected(t, s, false)
	cl2 := dial(t, path)
	expect(t, cl2, "add y", "")
	expect(t, cl2, "snapshot", "")
}

func TestBadHelloIsRefused(t *testing.T) {
	s, path := start(t, 500*time.Millisecond)
	tests := map[string][]byte{
		"garbage":       {0xff, 0xff, 0xff},
		"wrong version": {0x08, 0x07},
		"not a hello":   zds.EncodeAck("x"),
	}
	for name, hello := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := zds.SeqpacketDial(path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			if n, err := c.Read(buf); err == nil && n > 0 {
				t.Errorf("server answered a bad hello with %d bytes", n)
			}
			if s.Connected() {
				t.Error("server considers a bad hello connected")
			}
		})
	}
}

func addAsync(s *zds.Server, w zds.Workload) <-chan error {
	return async(func() error { return s.Add(w) })
}

// TestNewPodsGoToTheNewestZtunnelAndDelsToEveryOne is a rollout: the new ztunnel
// connects while the old one still serves. Both get the snapshot; a pod added
// afterwards goes to the new one only; a pod removed is removed from both.
func TestNewPodsGoToTheNewestZtunnelAndDelsToEveryOne(t *testing.T) {
	s, path := start(t, 2*time.Second)
	if err := s.Add(workload(t, "a")); err != nil {
		t.Fatal(err)
	}
	old := dial(t, path)
	expect(t, old, "add a", "")
	expect(t, old, "snapshot", "")
	waitConnected(t, s, true)

	fresh := dial(t, path)
	expect(t, fresh, "add a", "")
	expect(t, fresh, "snapshot", "")

	done := addAsync(s, workload(t, "b"))
	expect(t, fresh, "add b", "")
	if err := <-done; err != nil {
		t.Fatalf("Add with two ztunnels: %v", err)
	}
	// b only ever went to the new one, so its removal goes there only; a is on both.
	done = async(func() error { return s.Del("b") })
	expect(t, fresh, "del b", "")
	if err := <-done; err != nil {
		t.Fatalf("Del b: %v", err)
	}
	done = async(func() error { return s.Del("a") })
	// Dels go to the connections in the order they connected. The old one's next
	// message being this Del proves it was sent neither "add b" nor "del b".
	expect(t, old, "del a", "")
	expect(t, fresh, "del a", "")
	if err := <-done; err != nil {
		t.Fatalf("Del a: %v", err)
	}
}

// TestOlderZtunnelCatchesUpWhenTheNewestGoesAway: a new ztunnel that crashes during a
// rollout leaves the old one, which must then serve what it missed meanwhile (and get
// new pods again), without being sent what it already has.
func TestOlderZtunnelCatchesUpWhenTheNewestGoesAway(t *testing.T) {
	s, path := start(t, 2*time.Second)
	if err := s.Add(workload(t, "a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(workload(t, "r")); err != nil {
		t.Fatal(err)
	}
	old := dial(t, path)
	expect(t, old, "add a", "")
	expect(t, old, "add r", "")
	expect(t, old, "snapshot", "")
	fresh := dial(t, path)
	expect(t, fresh, "add a", "")
	expect(t, fresh, "add r", "")
	expect(t, fresh, "snapshot", "")

	done := addAsync(s, workload(t, "b")) // new pod: the new ztunnel only
	expect(t, fresh, "add b", "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done = addAsync(s, workload(t, "r")) // recreated sandbox: a new netns for r
	expect(t, fresh, "add r", "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	fresh.Close()
	// Caught up: b (never sent) and r (its new netns); not a, which it has.
	expect(t, old, "add b", "")
	expect(t, old, "add r", "")
	done = addAsync(s, workload(t, "c"))
	expect(t, old, "add c", "")
	if err := <-done; err != nil {
		t.Fatalf("Add after the newest left: %v", err)
	}
	waitConnected(t, s, true)
}

// TestSilentNewestZtunnelFallsBackToTheOlder: a new ztunnel that stops answering is
// dropped after the ack timeout and the pod it did not take goes to the older one.
func TestSilentNewestZtunnelFallsBackToTheOlder(t *testing.T) {
	s, path := start(t, 300*time.Millisecond)
	old := dial(t, path)
	expect(t, old, "snapshot", "")
	fresh := dial(t, path)
	expect(t, fresh, "snapshot", "")
	waitConnected(t, s, true)

	done := addAsync(s, workload(t, "x"))
	if _, f, err := fresh.Recv(2 * time.Second); err != nil { // read, never ack
		t.Fatal(err)
	} else {
		f.Close()
	}
	expect(t, old, "add x", "")
	if err := <-done; err != nil {
		t.Fatalf("Add whose newest ztunnel went silent = %v, want nil (the older one took it)", err)
	}
	if _, _, err := fresh.Recv(2 * time.Second); err == nil {
		t.Error("the silent ztunnel's connection was not closed")
	}
}

// TestNewestIsTheLastStartedZtunnelNotTheLastToConnect: after an agent restart during a
// rollout, the old ztunnel may reconnect after the new one. It gets the snapshot, but
// new pods keep going to the ztunnel that started last.
func TestNewestIsTheLastStartedZtunnelNotTheLastToConnect(t *testing.T) {
	var mu sync.Mutex
	starts := []uint64{200, 100} // the first to connect started last
	s, path := start(t, 2*time.Second, func(s *zds.Server) {
		zds.SetStarted(s, func() uint64 {
			mu.Lock()
			defer mu.Unlock()
			v := starts[0]
			starts = starts[1:]
			return v
		})
	})
	fresh := dial(t, path)
	expect(t, fresh, "snapshot", "")
	waitConnected(t, s, true)
	old := dial(t, path)
	expect(t, old, "snapshot", "")

	done := addAsync(s, workload(t, "w"))
	expect(t, fresh, "add w", "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The old one never got w: it is caught up with it once the new one leaves.
	fresh.Close()
	expect(t, old, "add w", "")
}

func TestPeerStartIsTheConnectingProcesssStartTime(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := zds.PeerStart("/proc", c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	want, err := zds.StatStart(b)
	if err != nil || got != want || got == 0 {
		t.Fatalf("PeerStart = %d, want this process's start time %d (%v)", got, want, err)
	}
}

func TestStatStartReadsFieldTwentyTwo(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 123456 1000 100 18446744073709551615"
	if got, err := zds.StatStart([]byte(line)); err != nil || got != 123456 {
		t.Fatalf("StatStart = %d, %v; want 123456", got, err)
	}
	for _, bad := range []string{"", "42 (x", "42 (x) S 1 2", "42 (x) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 nope 1000"} {
		if _, err := zds.StatStart([]byte(bad)); err == nil {
			t.Errorf("StatStart(%q) accepted", bad)
		}
	}
}
