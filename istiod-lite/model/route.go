package model

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// goodRoute is the last valid translation of a route, served in place of an
// invalid edit of it.
type goodRoute struct {
	uid        types.UID
	generation int64
	proto      *workload.Route
}

// addRoutes computes the status of every route Ambit handles and, for those with an
// attached parent, the Route resource waypoints receive. A route whose spec cannot be
// applied (a bad regular expression, an unsupported filter...) is not accepted; its
// last valid translation in prev, if any, is served instead, else it is sent marked
// invalid so that waypoints keep the version they have.
func (m *Model) addRoutes(in *Inputs, namespaces map[string]*corev1.Namespace, prev *Model) {
	nsLabels := func(ns string) map[string]string {
		if n := namespaces[ns]; n != nil {
			return n.Labels
		}
		return nil
	}
	for _, r := range in.HTTPRoutes {
		m.addRoute(KindHTTPRoute, r.ObjectMeta, r.Spec.ParentRefs, m.translateHTTPRoute(r), nsLabels(r.Namespace), prev)
	}
	for _, r := range in.GRPCRoutes {
		m.addRoute(KindGRPCRoute, r.ObjectMeta, r.Spec.ParentRefs, m.translateGRPCRoute(r), nsLabels(r.Namespace), prev)
	}
}

func (m *Model) addRoute(kind string, meta metav1.ObjectMeta, refs []gwv1.ParentReference, tr translation, nsLabels map[string]string, prev *Model) {
	ref := Ref{Namespace: meta.Namespace, Name: meta.Name}
	name := RouteName(kind, ref)
	gen := meta.Generation
	var kept *goodRoute
	if prev != nil && tr.invalid != "" {
		if g, ok := prev.goodRoutes[name]; ok && g.uid == meta.UID {
			kept = &g
		}
	}
	resolved := resolvedCondition(tr.unresolved, gen)
	st := RouteStatus{Generation: gen}
	var parents []*workload.RouteParent
	for _, p := range refs {
		a, handled := m.attach(kind, meta.Namespace, nsLabels, p)
		if !handled {
			continue
		}
		accepted := metav1.Condition{Type: string(gwv1.RouteConditionAccepted), Status: boolCondition(a.ok),
			Reason: a.reason, Message: a.message, ObservedGeneration: gen}
		if a.ok {
			if !slices.ContainsFunc(parents, func(q *workload.RouteParent) bool { return proto.Equal(q, a.parent) }) {
				parents = append(parents, a.parent)
			}
			if tr.invalid != "" {
				accepted.Status, accepted.Reason = metav1.ConditionFalse, string(tr.reason)
				accepted.Message = invalidMessage(tr.invalid, kept)
			}
		}
		st.Parents = append(st.Parents, gwv1.RouteParentStatus{
			ParentRef: p, ControllerName: mesh.WaypointControllerName, Conditions: []metav1.Condition{accepted, resolved},
		})
	}
	if len(st.Parents) == 0 {
		return
	}
	m.Routes[StatusKey{Kind: kind, Ref: ref}] = st
	switch {
	case tr.invalid == "" && len(parents) > 0:
		tr.proto.Parents = parents
		m.routeProtos[name] = tr.proto
		m.goodRoutes[name] = goodRoute{uid: meta.UID, generation: gen, proto: tr.proto}
	case kept != nil:
		m.routeProtos[name] = kept.proto
		m.goodRoutes[name] = *kept
	case tr.invalid != "" && len(parents) > 0:
		m.routeProtos[name] = &workload.Route{Kind: tr.proto.GetKind(), Namespace: meta.Namespace, Name: meta.Name,
			CreatedUnixNanos: tr.proto.GetCreatedUnixNanos(), Parents: parents, Invalid: tr.invalid}
	}
}

func invalidMessage(why string, kept *goodRoute) string {
	if kept != nil {
		return fmt.Sprintf("not applied: %s; the last valid version (generation %d) stays applied", why, kept.generation)
	}
	return "not applied: " + why + "; waypoints keep the version they last applied, if any"
}

// resolvedCondition is the ResolvedRefs condition: the reason of the first backendRef
// that does not resolve, and every problem in the message.
func resolvedCondition(problems []backendProblem, gen int64) metav1.Condition {
	c := metav1.Condition{Type: string(gwv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue,
		Reason: string(gwv1.RouteReasonResolvedRefs), Message: "all backends resolved", ObservedGeneration: gen}
	if len(problems) == 0 {
		return c
	}
	var msgs []string
	for _, p := range problems {
		if !slices.Contains(msgs, p.message) {
			msgs = append(msgs, p.message)
		}
	}
	c.Status, c.Reason = metav1.ConditionFalse, string(problems[0].reason)
	c.Message = strings.Join(msgs, "; ") + "; requests routed to them are answered 500"
	return c
}

func boolCondition(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}
