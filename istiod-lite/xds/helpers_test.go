package xds

import (
	"fmt"

	ads "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
)

func policy(ns, name string) *securityv1.AuthorizationPolicy {
	return &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{}}}}
}

// summary is "type +[added names] -[removed names]".
func summary(r *ads.DeltaDiscoveryResponse) string {
	var names []string
	for _, x := range r.Resources {
		names = append(names, x.Name)
	}
	return fmt.Sprintf("%s +%v -%v", r.TypeUrl, names, r.RemovedResources)
}
