package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ads "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// FuzzStreamHandle feeds arbitrary requests to a subscriber's protocol state: nothing
// may panic, and every response must only name resources of the subscriber's view.
func FuzzStreamHandle(f *testing.F) {
	for _, req := range []*ads.DeltaDiscoveryRequest{
		{Node: &core.Node{Id: "ztunnel~node-a"}, TypeUrl: workload.AddressType, ResourceNamesSubscribe: []string{"*"}},
		{TypeUrl: workload.AuthorizationType, ResourceNamesSubscribe: []string{"app/echo-from-client"}, InitialResourceVersions: map[string]string{"gone": "1"}},
		{TypeUrl: workload.AddressType, ResponseNonce: "1", ErrorDetail: &status.Status{Code: 3, Message: "bad"}},
		{TypeUrl: workload.AddressType, ResourceNamesUnsubscribe: []string{"*", "x"}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, b)
	}
	view := model.Build(loadInputs(f, "mesh.yaml")).ForNode("node-a")
	f.Fuzz(func(t *testing.T, first, second []byte) {
		st := newStream(Proxy{ID: "ztunnel~node-a", Kind: Ztunnel, Node: "node-a"})
		for _, b := range [][]byte{first, second} {
			req := &ads.DeltaDiscoveryRequest{}
			if err := proto.Unmarshal(b, req); err != nil {
				return
			}
			resps, _, err := st.handle(req, view)
			if err != nil {
				continue
			}
			resps = append(resps, st.push(view)...)
			for _, r := range resps {
				for _, res := range r.Resources {
					if view[r.TypeUrl][res.Name] == nil {
						t.Fatalf("sent %s %q outside the view", r.TypeUrl, res.Name)
					}
				}
			}
		}
	})
}
