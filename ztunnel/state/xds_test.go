package state

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/internal/xds"
)

// adsServer is a scripted delta ADS server: every stream gets the requests
// it sends recorded and the responses queued in script.
type adsServer struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	streams chan grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]
	done    chan struct{}
}

func (s *adsServer) DeltaAggregatedResources(st grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	s.streams <- st
	select {
	case <-s.done:
	case <-st.Context().Done():
	}
	return nil
}

func mustAny(t *testing.T, m *workload.Address) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func recv(t *testing.T, st grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestXDSAppliesGoodNACKsBadAndKeepsConfigAcrossReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &adsServer{streams: make(chan grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]), done: make(chan struct{})}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	tables := NewTables()
	c, err := xds.NewClient(xds.Config{Conn: conn, NodeID: "ztunnel~n1", Handler: tables,
		Types: []string{workload.AddressType}, RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		close(srv.done)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	st := <-srv.streams
	sub := recv(t, st)
	if sub.GetNode().GetId() != "ztunnel~n1" || sub.GetTypeUrl() != workload.AddressType || sub.GetResourceNamesSubscribe()[0] != "*" {
		t.Fatalf("subscription: %v", sub)
	}
	good := &workload.Address{Type: &workload.Address_Workload{Workload: &workload.Workload{
		Uid: "c//Pod/ns/a", Name: "a", Namespace: "ns", Addresses: [][]byte{{10, 0, 0, 1}},
		TunnelProtocol: workload.TunnelProtocol_HBONE, TrustDomain: "cluster.local", ServiceAccount: "sa"}}}
	bad := &workload.Address{Type: &workload.Address_Workload{Workload: &workload.Workload{
		Uid: "c//Pod/ns/b", Name: "b", Namespace: "ns", Addresses: [][]byte{{1, 2, 3}}}}}
	if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: workload.AddressType, Nonce: "1", Resources: []*discovery.Resource{
		{Name: "c//Pod/ns/a", Version: "v1", Resource: mustAny(t, good)},
		{Name: "c//Pod/ns/b", Version: "v1", Resource: mustAny(t, bad)},
	}}); err != nil {
		t.Fatal(err)
	}
	nack := recv(t, st)
	if nack.GetResponseNonce() != "1" || nack.GetErrorDetail() == nil {
		t.Fatalf("want a NACK of nonce 1, got %v", nack)
	}
	if w := tables.WorkloadByIP(netip.MustParseAddr("10.0.0.1")); w == nil || w.Identity.String() != "spiffe://cluster.local/ns/ns/sa/sa" {
		t.Fatalf("good resource not applied: %+v", w)
	}

	// istiod-lite goes away: the configuration stays; the client comes
	// back saying what it holds (the good resource only).
	srv.done <- struct{}{}
	st = <-srv.streams
	sub = recv(t, st)
	if v := sub.GetInitialResourceVersions(); len(v) != 1 || v["c//Pod/ns/a"] != "v1" {
		t.Fatalf("reconnect says it holds %v", v)
	}
	if tables.WorkloadByIP(netip.MustParseAddr("10.0.0.1")) == nil {
		t.Fatal("configuration lost while the server was away")
	}
	if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: workload.AddressType, Nonce: "2", RemovedResources: []string{"c//Pod/ns/a"}}); err != nil {
		t.Fatal(err)
	}
	if ack := recv(t, st); ack.GetResponseNonce() != "2" || ack.GetErrorDetail() != nil {
		t.Fatalf("want an ACK of nonce 2, got %v", ack)
	}
	if tables.WorkloadByIP(netip.MustParseAddr("10.0.0.1")) != nil {
		t.Fatal("removed resource still there")
	}
}
