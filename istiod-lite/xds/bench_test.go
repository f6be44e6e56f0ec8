package xds

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ads "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// benchInputs is a mesh of pods pods on nodes nodes, svcs services (each selecting
// pods/svcs pods) and policies selector policies, in 20 namespaces.
func benchInputs(pods, svcs, policies, nodes int) *model.Inputs {
	in := &model.Inputs{}
	const namespaces = 20
	for i := range namespaces {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneModeAmbient}}})
	}
	for i := range pods {
		svc := i % svcs
		in.Pods = append(in.Pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", svc%namespaces), Name: fmt.Sprintf("pod%d", i),
				Labels:      map[string]string{"app": fmt.Sprintf("app%d", svc)},
				Annotations: map[string]string{mesh.AnnotationRedirection: mesh.RedirectionEnabled}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", i%nodes), ServiceAccountName: fmt.Sprintf("sa%d", svc)},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		})
	}
	for i := range svcs {
		in.Services = append(in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("svc%d", i)},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", i>>8&255, i&255), Selector: map[string]string{"app": fmt.Sprintf("app%d", i)},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		})
	}
	for i := range policies {
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, &securityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("ap%d", i)},
			Spec: securityv1.AuthorizationPolicySpec{
				Selector: &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%svcs)}},
				Rules:    []securityv1.Rule{{From: []securityv1.RuleFrom{{Source: &securityv1.Source{Namespaces: []string{"ns0"}}}}}},
			},
		})
	}
	return in
}

// BenchmarkPolicyChangeToLastSubscriber measures, with 5,000 pods, 500 services, 200
// policies and 100 connected ztunnels, the time from a mesh-wide policy change (model
// rebuild included) to the last subscriber receiving it; it reports p50 and p99 and
// the heap in use.
func BenchmarkPolicyChangeToLastSubscriber(b *testing.B) {
	const subscribers = 100
	in := benchInputs(5000, 500, 200, subscribers)
	s := NewServer(Config{})
	s.Update(model.Build(in))
	c := startServer(b, s)
	got := make(chan string, subscribers*4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range subscribers {
		st, err := c.DeltaAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, typ := range []string{workload.AddressType, workload.AuthorizationType} {
			if err := st.Send(&ads.DeltaDiscoveryRequest{Node: &core.Node{Id: fmt.Sprintf("ztunnel~node%d", i)}, TypeUrl: typ}); err != nil {
				b.Fatal(err)
			}
		}
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				_ = st.Send(&ads.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
				for _, x := range r.Resources {
					if r.TypeUrl == workload.AuthorizationType {
						got <- x.Name
					}
				}
			}
		}()
	}
	waitFor(b, func() bool { return s.Connected() == subscribers })
	// Let the initial state reach everyone.
	time.Sleep(2 * time.Second)
	for len(got) > 0 {
		<-got
	}
	base := in.AuthorizationPolicies
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("bench-%d", i)
		in.AuthorizationPolicies = append(slices.Clone(base), &securityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: name},
			Spec:       securityv1.AuthorizationPolicySpec{Action: securityv1.ActionDeny, Rules: []securityv1.Rule{{From: []securityv1.RuleFrom{{Source: &securityv1.Source{Namespaces: []string{"bad"}}}}}}},
		})
		start := time.Now()
		s.Update(model.Build(in))
		want := "istio-system/" + name
		for n := 0; n < subscribers; {
			select {
			case x := <-got:
				if x == want {
					n++
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("only %d of %d subscribers got the change", n, subscribers)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}

// BenchmarkBuild measures one full model rebuild of the same mesh.
func BenchmarkBuild(b *testing.B) {
	in := benchInputs(5000, 500, 200, 100)
	b.ReportAllocs()
	for b.Loop() {
		model.Build(in)
	}
}
