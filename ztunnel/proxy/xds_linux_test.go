package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/internal/hbone/hbonetest"
	"github.com/ambit-mesh/ambit/internal/privtest"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// snapshotADS is a delta ADS server that answers every subscription with
// all the resources it has of that type, then only reads ACKs.
type snapshotADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	resources map[string][]*discovery.Resource // by type URL
}

func (s *snapshotADS) DeltaAggregatedResources(st grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	for {
		r, err := st.Recv()
		if err != nil {
			return nil //nolint:nilerr // the client went away, or we are stopping
		}
		if r.GetResponseNonce() != "" {
			continue
		}
		if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: r.GetTypeUrl(), Nonce: r.GetTypeUrl(),
			Resources: s.resources[r.GetTypeUrl()]}); err != nil {
			return err
		}
	}
}

func addressResource(t *testing.T, name string, a *workload.Address) *discovery.Resource {
	t.Helper()
	b, err := anypb.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: name, Version: "1", Resource: b}
}

// TestPrivilegedControlPlaneGoneKeepsServingLastConfig feeds both ztunnels
// from a delta xDS server as istiod-lite would, then kills the server: a
// connection opened before goes on carrying bytes, and a new one (which
// needs the destination's workload, its identity and its pod's
// configuration from the tables) still works.
func TestPrivilegedControlPlaneGoneKeepsServingLastConfig(t *testing.T) {
	privtest.Require(t)
	tp := newTopology(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	hbonePort := workload.TunnelProtocol_HBONE
	healthy := workload.WorkloadStatus_HEALTHY
	srv := &snapshotADS{resources: map[string][]*discovery.Resource{
		workload.AddressType: {
			addressResource(t, "pod-a", &workload.Address{Type: &workload.Address_Workload{Workload: &workload.Workload{
				Uid: "pod-a", Name: "a", Namespace: "ns-a", Addresses: [][]byte{ipA.AsSlice()}, TunnelProtocol: hbonePort,
				TrustDomain: "cluster.local", ServiceAccount: "sa-a", Status: healthy}}}),
			addressResource(t, "pod-b", &workload.Address{Type: &workload.Address_Workload{Workload: &workload.Workload{
				Uid: "pod-b", Name: "b", Namespace: "ns-b", Addresses: [][]byte{ipB.AsSlice()}, TunnelProtocol: hbonePort,
				TrustDomain: "cluster.local", ServiceAccount: "sa-b", Status: healthy,
				Services: map[string]*workload.PortList{svcKey: {Ports: []*workload.Port{{ServicePort: 80, TargetPort: 8080}}}}}}}),
			addressResource(t, svcKey, &workload.Address{Type: &workload.Address_Service{Service: &workload.Service{
				Name: "echo", Namespace: "ns-b", Hostname: "echo.ns-b.svc.cluster.local",
				Addresses: []*workload.NetworkAddress{{Address: vip.AsSlice()}}, Ports: []*workload.Port{{ServicePort: 80, TargetPort: 8080}}}}}),
		},
		workload.AuthorizationType: nil,
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	kill := func() { gs.Stop(); <-served }
	t.Cleanup(kill) // Stop is idempotent

	ca := hbonetest.NewCA(t, "cluster.local")
	hpa, hpb := tp.handle(t, "pa"), tp.handle(t, "pb")
	t.Cleanup(func() { hpa.Close(); hpb.Close() })
	za := startZtunnel(t, ctx, ca, Pod{UID: "pod-a", Name: "a", Namespace: "ns-a", ServiceAccount: "sa-a",
		Sockets: NewNetnsSockets(tp.handle(t, "pa"), DefaultMark)})
	zb := startZtunnel(t, ctx, ca, Pod{UID: "pod-b", Name: "b", Namespace: "ns-b", ServiceAccount: "sa-b",
		Sockets: NewNetnsSockets(tp.handle(t, "pb"), DefaultMark)})
	var conns []*grpc.ClientConn
	for i, z := range []*ztunnel{za, zb} {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
		synced := make(chan struct{})
		c, err := xds.NewClient(xds.Config{Conn: conn, NodeID: "ztunnel~node-" + string(rune('a'+i)), Handler: z.tables,
			Types: []string{workload.AddressType, workload.AuthorizationType}, Synced: func() { close(synced) },
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		xctx, xcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(xctx) }()
		t.Cleanup(func() {
			xcancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
		select {
		case <-synced:
		case <-time.After(10 * time.Second):
			t.Fatal("xDS never synced")
		}
	}
	peers := echoServer(t, ctx, hpb, "8080")

	before := dial(t, hpa, "10.77.2.2:8080")
	if got, err := echo(before, "before"); err != nil || got != "before" {
		t.Fatalf("with istiod-lite up: %q, %v", got, err)
	}
	<-peers

	kill()
	for _, conn := range conns { // both clients have seen it go
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		for s := conn.GetState(); s == connectivity.Ready || s == connectivity.Idle; s = conn.GetState() {
			if !conn.WaitForStateChange(wctx, s) {
				wcancel()
				t.Fatalf("xDS connection still %s after the server was killed", s)
			}
		}
		wcancel()
	}

	if got, err := echo(before, "still there"); err != nil || got != "still there" {
		t.Fatalf("existing connection after istiod-lite was killed: %q, %v", got, err)
	}
	for _, dst := range []string{"10.77.2.2:8080", "10.96.0.10:80"} { // pod IP and Service VIP
		msg := "new via " + dst
		if got, err := echo(dial(t, hpa, dst), msg); err != nil || got != msg {
			t.Fatalf("new connection to %s after istiod-lite was killed: %q, %v", dst, got, err)
		}
		<-peers
	}
	if got, err := echo(before, "and after"); err != nil || got != "and after" {
		t.Fatalf("existing connection at the end: %q, %v", got, err)
	}
}
