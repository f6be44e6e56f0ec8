package xds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ads "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func loadInputs(t testing.TB, name string) *model.Inputs {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := model.DecodeInputs(f)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// startServer serves s over an in-memory connection and returns a client.
func startServer(t testing.TB, s *Server) ads.AggregatedDiscoveryServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	s.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); g.Stop(); <-done })
	return ads.NewAggregatedDiscoveryServiceClient(cc)
}

// client is a test subscriber.
type client struct {
	t      testing.TB
	stream ads.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	// have is the client's view: type -> name -> version.
	have map[string]map[string]string
}

func subscribe(t testing.TB, c ads.AggregatedDiscoveryServiceClient, id string, have map[string]map[string]string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{t: t, stream: s, have: map[string]map[string]string{}}
	types := []string{workload.AddressType, workload.AuthorizationType}
	if strings.HasPrefix(id, "waypoint~") {
		types = append(types, workload.RouteType)
	}
	for _, typ := range types {
		cl.have[typ] = map[string]string{}
		req := &ads.DeltaDiscoveryRequest{Node: &discovery.Node{Id: id}, TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}
		if have != nil {
			req.InitialResourceVersions = have[typ]
			for k, v := range have[typ] {
				cl.have[typ][k] = v
			}
		}
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	return cl
}

// recv reads one response, applies it to the client's view, and ACKs or NACKs it.
func (c *client) recv(nack string) *ads.DeltaDiscoveryResponse {
	c.t.Helper()
	r, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	for _, res := range r.Resources {
		c.have[r.TypeUrl][res.Name] = res.Version
	}
	for _, n := range r.RemovedResources {
		delete(c.have[r.TypeUrl], n)
	}
	ack := &ads.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}
	if nack != "" {
		ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: nack}
	}
	if err := c.stream.Send(ack); err != nil {
		c.t.Fatal(err)
	}
	return r
}

// render prints responses as stable, readable JSON for golden files.
func render(t testing.TB, resps []*ads.DeltaDiscoveryResponse) []byte {
	t.Helper()
	type res struct {
		Name     string          `json:"name"`
		Resource json.RawMessage `json:"resource"`
	}
	out := map[string][]res{}
	for _, r := range resps {
		for _, x := range r.Resources {
			msg, err := x.Resource.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			js, err := protojson.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, js); err != nil {
				t.Fatal(err)
			}
			out[r.TypeUrl] = append(out[r.TypeUrl], res{Name: x.Name, Resource: buf.Bytes()})
		}
		slices.SortFunc(out[r.TypeUrl], func(a, b res) int { return strings.Compare(a.Name, b.Name) })
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", name, d)
	}
}

func TestGoldenSubscriberViews(t *testing.T) {
	s := NewServer(Config{})
	s.Update(model.Build(loadInputs(t, "mesh.yaml")))
	c := startServer(t, s)
	for _, id := range []string{"ztunnel~node-a", "ztunnel~node-b", "waypoint~app~waypoint"} {
		t.Run(id, func(t *testing.T) {
			cl := subscribe(t, c, id, nil)
			var resps []*ads.DeltaDiscoveryResponse
			for range cl.have { // one response per type subscribed
				resps = append(resps, cl.recv(""))
			}
			golden(t, "mesh."+id+".golden.json", render(t, resps))
		})
	}
}

func TestPolicyChangeReachesOnlyNodesThatEnforceIt(t *testing.T) {
	in := loadInputs(t, "mesh.yaml")
	s := NewServer(Config{})
	s.Update(model.Build(in))
	c := startServer(t, s)
	a := subscribe(t, c, "ztunnel~node-a", nil)
	b := subscribe(t, c, "ztunnel~node-b", nil)
	for _, cl := range []*client{a, b} {
		cl.recv("")
		cl.recv("")
	}
	// A new policy in namespace other, which has a workload on node-b only.
	in.AuthorizationPolicies = append(in.AuthorizationPolicies, policy("other", "new"))
	s.Update(model.Build(in))
	r := b.recv("")
	if r.TypeUrl != workload.AuthorizationType || len(r.Resources) != 1 || r.Resources[0].Name != "other/new" || len(r.RemovedResources) != 0 {
		t.Errorf("node-b got %v, want exactly the new policy", summary(r))
	}
	// node-a must get nothing: prove it by sending it a later change it does need.
	in.AuthorizationPolicies = in.AuthorizationPolicies[:len(in.AuthorizationPolicies)-1]
	in.Pods = slices.DeleteFunc(slices.Clone(in.Pods), func(p *corev1.Pod) bool { return p.Name == "echo-b" })
	s.Update(model.Build(in))
	got := map[string]bool{}
	for len(got) < 1 {
		r := a.recv("")
		got[summary(r)] = true
	}
	want := "type.googleapis.com/ambit.workload.v1.Address +[] -[Kubernetes//Pod/app/echo-b]"
	if !got[want] {
		t.Errorf("node-a got %v, want only %q", got, want)
	}
}

func TestNackDoesNotStopLaterUpdates(t *testing.T) {
	in := loadInputs(t, "mesh.yaml")
	s := NewServer(Config{})
	s.Update(model.Build(in))
	c := startServer(t, s)
	b := subscribe(t, c, "ztunnel~node-b", nil)
	b.recv("")
	b.recv("")
	in.AuthorizationPolicies = append(in.AuthorizationPolicies, policy("other", "first"))
	s.Update(model.Build(in))
	b.recv("cannot parse policy")
	in.AuthorizationPolicies = append(in.AuthorizationPolicies, policy("other", "second"))
	s.Update(model.Build(in))
	r := b.recv("")
	if len(r.Resources) != 1 || r.Resources[0].Name != "other/second" {
		t.Errorf("after a NACK got %s, want the next change only", summary(r))
	}
}

func TestReconnectResumesWithOnlyTheDifference(t *testing.T) {
	in := loadInputs(t, "mesh.yaml")
	s := NewServer(Config{})
	s.Update(model.Build(in))
	c := startServer(t, s)
	a := subscribe(t, c, "ztunnel~node-a", nil)
	a.recv("")
	a.recv("")
	have := a.have
	_ = a.stream.CloseSend()
	// While disconnected, echo-b goes away.
	in.Pods = slices.DeleteFunc(slices.Clone(in.Pods), func(p *corev1.Pod) bool { return p.Name == "echo-b" })
	s.Update(model.Build(in))
	a2 := subscribe(t, c, "ztunnel~node-a", have)
	got := []string{summary(a2.recv("")), summary(a2.recv(""))}
	slices.Sort(got)
	want := []string{
		"type.googleapis.com/ambit.workload.v1.Address +[] -[Kubernetes//Pod/app/echo-b]",
		"type.googleapis.com/ambit.workload.v1.Authorization +[] -[]",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestSubscriberWaitsForFirstModel(t *testing.T) {
	s := NewServer(Config{})
	c := startServer(t, s)
	a := subscribe(t, c, "ztunnel~node-a", nil)
	waitFor(t, func() bool { return s.Connected() == 1 })
	s.Update(model.Build(loadInputs(t, "mesh.yaml")))
	if r := a.recv(""); len(r.Resources) == 0 {
		t.Errorf("first response after the first model is empty: %s", summary(r))
	}
}

func TestBadStreamsAreRefusedAndOthersUnaffected(t *testing.T) {
	s := NewServer(Config{})
	s.Update(model.Build(loadInputs(t, "mesh.yaml")))
	c := startServer(t, s)
	good := subscribe(t, c, "ztunnel~node-a", nil)
	good.recv("")
	good.recv("")
	for _, tc := range []struct {
		name string
		req  *ads.DeltaDiscoveryRequest
		code codes.Code
	}{
		{"no node", &ads.DeltaDiscoveryRequest{TypeUrl: workload.AddressType}, codes.InvalidArgument},
		{"bad node id", &ads.DeltaDiscoveryRequest{Node: &discovery.Node{Id: "sidecar~1.2.3.4"}, TypeUrl: workload.AddressType}, codes.InvalidArgument},
		{"unknown type", &ads.DeltaDiscoveryRequest{Node: &discovery.Node{Id: "ztunnel~n"}, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := c.DeltaAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			_, err = st.Recv()
			if grpcstatus.Code(err) != tc.code {
				t.Errorf("got %v, want code %v", err, tc.code)
			}
		})
	}
	in := loadInputs(t, "mesh.yaml")
	in.Pods = in.Pods[:0]
	s.Update(model.Build(in))
	if r := good.recv(""); len(r.RemovedResources) == 0 {
		t.Errorf("the good subscriber stopped getting updates: %s", summary(r))
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(errors.New("timed out"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
