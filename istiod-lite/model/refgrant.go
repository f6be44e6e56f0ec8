package model

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// referenceGrants indexes ReferenceGrants by namespace: the namespace whose objects
// they let others refer to.
type referenceGrants map[string][]*gwv1beta1.ReferenceGrant

func indexReferenceGrants(grants []*gwv1beta1.ReferenceGrant) referenceGrants {
	out := referenceGrants{}
	for _, g := range grants {
		out[g.Namespace] = append(out[g.Namespace], g)
	}
	return out
}

// allowsService says whether a route of kind (HTTPRoute, GRPCRoute) in namespace
// from may refer to Service name in namespace to: a ReferenceGrant in to must list
// the route's group, kind and namespace in from and core Services (all, or that
// one by name) in to. References within a namespace need no grant.
func (g referenceGrants) allowsService(kind, from, to, name string) bool {
	if from == to {
		return true
	}
	for _, rg := range g[to] {
		fromOK := false
		for _, f := range rg.Spec.From {
			if f.Group == gwv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == from {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, t := range rg.Spec.To {
			if (t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name) {
				return true
			}
		}
	}
	return false
}
