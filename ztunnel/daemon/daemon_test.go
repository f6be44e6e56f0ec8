package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ambit-mesh/ambit/api/workload"
	zdsapi "github.com/ambit-mesh/ambit/api/zds"
)

// ads answers every subscription with an empty response of its type and
// reports the requests it got.
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	reqs chan *discovery.DeltaDiscoveryRequest
	// hold, if set, delays every response until it is closed.
	hold chan struct{}
}

func (s *ads) DeltaAggregatedResources(st grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	for {
		r, err := st.Recv()
		if err != nil {
			return nil //nolint:nilerr // the client went away
		}
		s.reqs <- r
		if s.hold != nil {
			<-s.hold
		}
		if r.GetResponseNonce() == "" {
			if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: r.GetTypeUrl(), Nonce: r.GetTypeUrl()}); err != nil {
				return err
			}
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rig is a daemon's parts wired to an in-process ADS server and a node agent
// socket nobody has accepted on yet.
type rig struct {
	srv   *ads
	agent *net.UnixListener
	p     *parts
}

func newRig(t *testing.T, hold chan struct{}) *rig {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &ads{reqs: make(chan *discovery.DeltaDiscoveryRequest, 16), hold: hold}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	go gs.Serve(ln) //nolint:errcheck // ends with Stop
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Mkdir(filepath.Join(dir, "n1"), 0o700); err != nil {
		t.Fatal(err)
	}
	agent, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "n1", "ztunnel.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Close() })

	cfg := Default()
	cfg.NodeName, cfg.RunDir = "n1", dir
	cfg.MetricsAddr, cfg.HealthAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.build(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{srv: srv, agent: agent, p: p}
}

// start runs the parts until the test ends.
func (r *rig) start(t *testing.T) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.p.run(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestDaemonIsReadyOnceConfigAndSnapshotAreIn(t *testing.T) {
	r := newRig(t, nil)
	srv, agent, p := r.srv, r.agent, r.p
	stop := r.start(t)

	// xDS: both types subscribed as ztunnel~n1, both responses ACKed.
	types := map[string]bool{}
	for len(types) < 2 {
		r := <-srv.reqs
		if r.GetResponseNonce() == "" {
			if r.GetNode().GetId() != "ztunnel~n1" || !slices.Equal(r.GetResourceNamesSubscribe(), []string{"*"}) {
				t.Fatalf("subscription: %v", r)
			}
			types[r.GetTypeUrl()] = true
		}
	}
	if !types[workload.AddressType] || !types[workload.AuthorizationType] {
		t.Fatalf("subscribed to %v", types)
	}
	waitFor(t, "xDS synced", func() bool { return !slices.Contains(p.ready.Pending(), condXDS) })
	if !slices.Contains(p.ready.Pending(), condHandoff) {
		t.Fatal("ready before the node agent's snapshot")
	}

	// The node agent: hello in, empty snapshot out, ack back.
	if err := agent.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := agent.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}})
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready", func() bool { return len(p.ready.Pending()) == 0 })

	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestHandoffWaitsForConfiguration: the node agent's pods are taken (and their
// listeners bound beside an old ztunnel's) only once the configuration is in,
// so that no connection the kernel gives this ztunnel has to wait for it.
func TestHandoffWaitsForConfiguration(t *testing.T) {
	hold := make(chan struct{})
	r := newRig(t, hold)
	r.start(t)
	released := false
	t.Cleanup(func() {
		if !released {
			close(hold)
		}
	})
	// A subscription is in (the server holds its answer): the parts run.
	<-r.srv.reqs
	select {
	case <-r.p.proxy.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not running")
	}
	// Before the change this test guards, the hand-off connected within
	// milliseconds of the proxy starting; a second is far beyond that.
	if err := r.agent.SetDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if c, err := r.agent.AcceptUnix(); err == nil {
		c.Close()
		t.Fatal("the hand-off connected to the node agent before the configuration was in")
	}
	close(hold)
	released = true
	if err := r.agent.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := r.agent.AcceptUnix()
	if err != nil {
		t.Fatalf("no hand-off connection once the configuration was in: %v", err)
	}
	c.Close()
}

func TestRunNeedsTheMeshRoot(t *testing.T) {
	dir := t.TempDir()
	cfg := Default()
	cfg.NodeName = "n1"
	cfg.RootCertFile = filepath.Join(dir, "root-cert.pem")
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "mesh root") {
		t.Fatalf("missing root: %v", err)
	}
	if err := os.WriteFile(cfg.RootCertFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "mesh root") || !strings.Contains(err.Error(), "no PEM blocks") {
		t.Fatalf("garbage root: %v", err)
	}
}

func TestNewRejectsAnInvalidConfig(t *testing.T) {
	cfg := Default()
	cfg.ControlPlane, cfg.TrustDomain = "no-port", "Not A Domain"
	_, err := New(cfg)
	for _, want := range []string{"node name", "control plane", "trust domain"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}
