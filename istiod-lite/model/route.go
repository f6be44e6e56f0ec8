package model

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

// Kinds of routes in StatusKey.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// RouteStatus is the desired status of a route: one entry per parent Ambit handles
// (a Service, as GAMMA, or a waypoint Gateway). Parents of other controllers are not
// listed; the status writer keeps their entries.
type RouteStatus struct {
	Generation int64
	Parents    []gwv1.RouteParentStatus
}

// routeStatus computes the parent statuses of a route with the given parents and
// backends (one entry per backendRef of every rule).
func (m *Model) routeStatus(ns string, gen int64, parents []gwv1.ParentReference, backends []gwv1.BackendRef) RouteStatus {
	st := RouteStatus{Generation: gen}
	resolved, rReason, rMsg := true, string(gwv1.RouteReasonResolvedRefs), "all backends resolved"
	for _, b := range backends {
		if problem, reason := m.backendProblem(ns, b.BackendObjectReference); problem != "" {
			resolved, rReason, rMsg = false, reason, problem
			break
		}
	}
	for _, p := range parents {
		group, kind := gwv1.GroupName, "Gateway"
		if p.Group != nil {
			group = string(*p.Group)
		}
		if p.Kind != nil {
			kind = string(*p.Kind)
		}
		pns := ns
		if p.Namespace != nil {
			pns = string(*p.Namespace)
		}
		var accepted bool
		var aReason, aMsg string
		switch {
		case kind == "Service" && (group == "" || group == "core"):
			accepted = m.Services[pns+"/"+string(p.Name)+"."+pns+".svc."+m.DomainSuffix] != nil
			aReason, aMsg = string(gwv1.RouteReasonAccepted), "attached to the Service (GAMMA)"
			if !accepted {
				aReason, aMsg = string(gwv1.RouteReasonNoMatchingParent), fmt.Sprintf("no Service %s/%s", pns, p.Name)
			}
		case kind == "Gateway" && group == gwv1.GroupName:
			w := m.Waypoints[Ref{Namespace: pns, Name: string(p.Name)}]
			if w == nil {
				continue // not a waypoint: another controller's parent
			}
			accepted, aReason, aMsg = true, string(gwv1.RouteReasonAccepted), "attached to the waypoint"
			if pns != ns && !w.allowsNamespace(ns, nil) {
				accepted, aReason, aMsg = false, string(gwv1.RouteReasonNotAllowedByListeners), "the waypoint does not admit routes from namespace "+ns
			}
		default:
			continue
		}
		conds := []metav1.Condition{
			{Type: string(gwv1.RouteConditionAccepted), Status: boolCondition(accepted), Reason: aReason, Message: aMsg, ObservedGeneration: gen},
			{Type: string(gwv1.RouteConditionResolvedRefs), Status: boolCondition(resolved), Reason: rReason, Message: rMsg, ObservedGeneration: gen},
		}
		st.Parents = append(st.Parents, gwv1.RouteParentStatus{
			ParentRef: p, ControllerName: mesh.WaypointControllerName, Conditions: conds,
		})
	}
	return st
}

// backendProblem says why a backend does not resolve, with the Gateway API reason.
func (m *Model) backendProblem(ns string, b gwv1.BackendObjectReference) (problem, reason string) {
	if (b.Group != nil && *b.Group != "" && *b.Group != "core") || (b.Kind != nil && *b.Kind != "Service") {
		return fmt.Sprintf("backend %s: only Services are supported", b.Name), string(gwv1.RouteReasonInvalidKind)
	}
	bns := ns
	if b.Namespace != nil {
		bns = string(*b.Namespace)
	}
	if m.Services[bns+"/"+string(b.Name)+"."+bns+".svc."+m.DomainSuffix] == nil {
		return fmt.Sprintf("backend Service %s/%s not found", bns, b.Name), string(gwv1.RouteReasonBackendNotFound)
	}
	return "", ""
}

func boolCondition(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// addRoutes computes the status of every route Ambit handles and, for those with an
// accepted parent, the Route resource waypoints receive.
func (m *Model) addRoutes(http []*gwv1.HTTPRoute, grpc []*gwv1.GRPCRoute) {
	add := func(kind string, meta metav1.ObjectMeta, parents []gwv1.ParentReference, backends []gwv1.BackendRef) []*workload.RouteParent {
		st := m.routeStatus(meta.Namespace, meta.Generation, parents, backends)
		if len(st.Parents) == 0 {
			return nil
		}
		m.Routes[StatusKey{Kind: kind, Ref: Ref{Namespace: meta.Namespace, Name: meta.Name}}] = st
		return acceptedParents(st)
	}
	for _, r := range http {
		var backends []gwv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				backends = append(backends, b.BackendRef)
			}
		}
		if parents := add(KindHTTPRoute, r.ObjectMeta, r.Spec.ParentRefs, backends); len(parents) > 0 {
			m.routeProtos[RouteName(KindHTTPRoute, Ref{Namespace: r.Namespace, Name: r.Name})] = httpRouteProto(r, parents)
		}
	}
	for _, r := range grpc {
		var backends []gwv1.BackendRef
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				backends = append(backends, b.BackendRef)
			}
		}
		if parents := add(KindGRPCRoute, r.ObjectMeta, r.Spec.ParentRefs, backends); len(parents) > 0 {
			m.routeProtos[RouteName(KindGRPCRoute, Ref{Namespace: r.Namespace, Name: r.Name})] = grpcRouteProto(r, parents)
		}
	}
}
