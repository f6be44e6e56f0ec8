package model

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/api/workload"
)

// attachment is the outcome of one parentRef of a route: whether it attaches, the
// Gateway API reason and a message for its Accepted condition, and what the
// waypoint applies the route to.
type attachment struct {
	ok      bool
	reason  string
	message string
	parent  *workload.RouteParent
}

func notAttached(reason gwv1.RouteConditionReason, format string, args ...any) attachment {
	return attachment{reason: string(reason), message: fmt.Sprintf(format, args...)}
}

// attach resolves parentRef p of a route of kind in namespace ns (labels
// nsLabels). handled is false for a parent of another controller (a Gateway that
// is not a waypoint, or another kind of parent).
func (m *Model) attach(kind, ns string, nsLabels map[string]string, p gwv1.ParentReference) (a attachment, handled bool) {
	group, pkind := gwv1.GroupName, "Gateway"
	if p.Group != nil {
		group = string(*p.Group)
	}
	if p.Kind != nil {
		pkind = string(*p.Kind)
	}
	pns := ns
	if p.Namespace != nil {
		pns = string(*p.Namespace)
	}
	switch {
	case pkind == "Service" && (group == "" || group == "core"):
		svc := m.Services[pns+"/"+string(p.Name)+"."+pns+".svc."+m.DomainSuffix]
		if svc == nil {
			return notAttached(gwv1.RouteReasonNoMatchingParent, "no Service %s/%s", pns, p.Name), true
		}
		return svc.attach(p), true
	case pkind == "Gateway" && group == gwv1.GroupName:
		w := m.Waypoints[Ref{Namespace: pns, Name: string(p.Name)}]
		if w == nil {
			return attachment{}, false // not a waypoint: another controller's parent
		}
		return w.attach(kind, ns, nsLabels, p), true
	}
	return attachment{}, false
}

// attach applies a GAMMA parentRef's sectionName (a port name) and port to the
// Service: the route then applies to that service port only, and a ref naming no
// port of the Service does not attach.
func (s *Service) attach(p gwv1.ParentReference) attachment {
	rp := &workload.RouteParent{Kind: "Service", Namespace: s.Ref.Namespace, Name: s.Ref.Name}
	where := "the Service (GAMMA)"
	switch {
	case p.SectionName != nil:
		i := slices.IndexFunc(s.Ports, func(sp corev1.ServicePort) bool { return sp.Name == string(*p.SectionName) })
		if i < 0 {
			return notAttached(gwv1.RouteReasonNoMatchingParent, "Service %s has no port named %q", s.Ref, *p.SectionName)
		}
		if p.Port != nil && int32(*p.Port) != s.Ports[i].Port {
			return notAttached(gwv1.RouteReasonNoMatchingParent, "port %q of Service %s is %d, not %d", *p.SectionName, s.Ref, s.Ports[i].Port, *p.Port)
		}
		rp.Port = uint32(s.Ports[i].Port) //nolint:gosec // a Service port is 1..65535 (API validation).
		where = fmt.Sprintf("port %s (%d) of the Service (GAMMA)", *p.SectionName, rp.Port)
	case p.Port != nil:
		if !slices.ContainsFunc(s.Ports, func(sp corev1.ServicePort) bool { return sp.Port == int32(*p.Port) }) {
			return notAttached(gwv1.RouteReasonNoMatchingParent, "Service %s has no port %d", s.Ref, *p.Port)
		}
		rp.Port = uint32(*p.Port) //nolint:gosec // PortNumber is 1..65535 (CRD validation).
		where = fmt.Sprintf("port %d of the Service (GAMMA)", rp.Port)
	}
	return attachment{ok: true, reason: string(gwv1.RouteReasonAccepted), message: "attached to " + where, parent: rp}
}

// attach applies a parentRef to the waypoint's listeners, as the Gateway API
// does: sectionName and port select the relevant listeners (none: the ref does
// not match), and the route attaches if one of them admits it (its kind and its
// namespace). A waypoint applies routes on its HBONE listener, to all the traffic
// it handles; listeners of other protocols take no routes.
func (w *Waypoint) attach(kind, ns string, nsLabels map[string]string, p gwv1.ParentReference) attachment {
	var relevant []listener
	for _, l := range w.listeners {
		if (p.SectionName == nil || string(*p.SectionName) == l.name) && (p.Port == nil || int32(*p.Port) == l.port) {
			relevant = append(relevant, l)
		}
	}
	if len(relevant) == 0 {
		var sel []string
		if p.SectionName != nil {
			sel = append(sel, fmt.Sprintf("named %q", *p.SectionName))
		}
		if p.Port != nil {
			sel = append(sel, fmt.Sprintf("on port %d", *p.Port))
		}
		return notAttached(gwv1.RouteReasonNoMatchingParent, "waypoint %s has no listener %s", w.Ref, strings.Join(sel, " "))
	}
	var problems []string
	for _, l := range relevant {
		switch {
		case l.protocol != mesh.WaypointProtocol:
			problems = append(problems, fmt.Sprintf("listener %s is %s: a waypoint applies routes on its %s listener only", l.name, l.protocol, mesh.WaypointProtocol))
		case !l.allowsKind(kind):
			problems = append(problems, fmt.Sprintf("listener %s does not allow %s (allowedRoutes.kinds)", l.name, kind))
		case !namespaceAllowed(l.from, l.selector, w.Ref.Namespace, ns, nsLabels):
			problems = append(problems, fmt.Sprintf("listener %s does not admit routes from namespace %s (allowedRoutes.namespaces)", l.name, ns))
		default:
			return attachment{ok: true, reason: string(gwv1.RouteReasonAccepted),
				message: "attached to listener " + l.name + " of the waypoint",
				parent:  &workload.RouteParent{Kind: "Gateway", Namespace: w.Ref.Namespace, Name: w.Ref.Name}}
		}
	}
	return notAttached(gwv1.RouteReasonNotAllowedByListeners, "%s", strings.Join(problems, "; "))
}

// allowsKind applies allowedRoutes.kinds to a route kind; by default a waypoint
// listener takes HTTPRoutes and GRPCRoutes.
func (l *listener) allowsKind(kind string) bool {
	if len(l.kinds) == 0 {
		return kind == KindHTTPRoute || kind == KindGRPCRoute
	}
	return slices.ContainsFunc(l.kinds, func(k gwv1.RouteGroupKind) bool {
		return string(k.Kind) == kind && (k.Group == nil || string(*k.Group) == gwv1.GroupName)
	})
}
