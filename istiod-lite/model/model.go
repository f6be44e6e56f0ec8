package model

import (
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/api/workload"
)

// Model is the mesh computed from one Inputs snapshot. It is immutable once built.
type Model struct {
	TrustDomain   string
	RootNamespace string
	ClusterID     string
	DomainSuffix  string
	// Workloads by UID, Services by key ("<namespace>/<hostname>"), Policies by
	// Authorization name ("<namespace>/<name>"), Waypoints by Gateway.
	Workloads map[string]*Workload
	Services  map[string]*Service
	Policies  map[string]*Policy
	Waypoints map[Ref]*Waypoint
	// Status is the status every policy the model read should have.
	Status map[StatusKey]ObjectStatus
	// Routes is the status of every HTTPRoute and GRPCRoute attached to a Service or
	// a waypoint.
	Routes map[StatusKey]RouteStatus

	// routeProtos are the Route resources of routes with an attached parent, by
	// RouteName; goodRoutes their last valid translations, kept across builds.
	routeProtos map[string]*workload.Route
	goodRoutes  map[string]goodRoute
	grants      referenceGrants
	res         resources
}

// StatusKey names an object whose status the model computes.
type StatusKey struct {
	// Kind is AuthorizationPolicy or PeerAuthentication.
	Kind string
	Ref  Ref
}

// ObjectStatus is the desired status of an object: conditions without timestamps (the
// status writer keeps transition times) for the generation they describe.
type ObjectStatus struct {
	Generation int64
	Conditions []metav1.Condition
}

// Kinds of objects in StatusKey.
const (
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindPeerAuthentication  = "PeerAuthentication"
)

// Build computes the model from a snapshot. It is a pure function of its input.
func Build(input *Inputs) *Model { return BuildFrom(nil, input) }

// BuildFrom is Build for the model after prev (nil for the first): a route whose
// spec became invalid keeps being served in its last valid version from prev. It is
// a pure function of its inputs.
func BuildFrom(prev *Model, input *Inputs) *Model {
	in := input.withDefaults()
	m := &Model{
		TrustDomain:   in.TrustDomain,
		RootNamespace: in.RootNamespace,
		ClusterID:     in.ClusterID,
		DomainSuffix:  in.DomainSuffix,
		Workloads:     map[string]*Workload{},
		Services:      map[string]*Service{},
		Policies:      map[string]*Policy{},
		Waypoints:     map[Ref]*Waypoint{},
		Status:        map[StatusKey]ObjectStatus{},
		Routes:        map[StatusKey]RouteStatus{},
		routeProtos:   map[string]*workload.Route{},
		goodRoutes:    map[string]goodRoute{},
		grants:        indexReferenceGrants(in.ReferenceGrants),
	}
	namespaces := map[string]*corev1.Namespace{}
	for _, ns := range in.Namespaces {
		namespaces[ns.Name] = ns
	}
	ws := waypoints{byRef: m.Waypoints, bySA: map[Ref]*Waypoint{}}
	for _, gw := range in.Gateways {
		var nsLabels map[string]string
		if ns := namespaces[gw.Namespace]; ns != nil {
			nsLabels = ns.Labels
		}
		if w := waypointFromGateway(gw, nsLabels, in.DomainSuffix); w != nil {
			m.Waypoints[w.Ref] = w
			if w.ForServiceAccount != "" {
				ws.bySA[Ref{Namespace: w.Ref.Namespace, Name: w.ForServiceAccount}] = w
			}
		}
	}
	serviceAccounts := map[Ref]*corev1.ServiceAccount{}
	for _, sa := range in.ServiceAccounts {
		serviceAccounts[Ref{Namespace: sa.Namespace, Name: sa.Name}] = sa
	}
	servicesByNS := map[string][]*Service{}
	for _, svc := range in.Services {
		if s := buildService(&in, svc, namespaces[svc.Namespace], ws); s != nil {
			m.Services[s.Key] = s
			servicesByNS[s.Ref.Namespace] = append(servicesByNS[s.Ref.Namespace], s)
		}
	}
	for _, pod := range in.Pods {
		sa := serviceAccounts[Ref{Namespace: pod.Namespace, Name: serviceAccountName(pod)}]
		w := buildWorkload(&in, pod, sa, namespaces[pod.Namespace], ws)
		if w == nil {
			continue
		}
		m.Workloads[w.UID] = w
		for _, s := range servicesByNS[pod.Namespace] {
			if s.selects(pod) {
				if pm := s.portMappings(pod); len(pm) > 0 {
					w.Services[s.Key] = pm
				}
				s.Endpoints = append(s.Endpoints, w.UID)
			}
		}
	}
	for _, s := range m.Services {
		slices.Sort(s.Endpoints)
	}
	m.addAuthorizationPolicies(in.AuthorizationPolicies)
	m.addPeerAuthentications(in.PeerAuthentications)
	m.addRoutes(&in, namespaces, prev)
	for _, w := range m.Workloads {
		for name, p := range m.Policies {
			if p.appliesBySelector(w, m.RootNamespace) {
				w.Policies = append(w.Policies, name)
			}
		}
		slices.Sort(w.Policies)
	}
	m.translate()
	return m
}

// appliesBySelector says whether a WORKLOAD_SELECTOR policy lists the workload.
func (p *Policy) appliesBySelector(w *Workload, rootNS string) bool {
	if p.selects != nil {
		return p.selects(w)
	}
	if p.selector == nil || (p.Ref.Namespace != w.Namespace && p.Ref.Namespace != rootNS) {
		return false
	}
	return p.selector.Matches(labels.Set(w.Labels))
}

func (m *Model) addAuthorizationPolicies(aps []*securityv1.AuthorizationPolicy) {
	for _, ap := range aps {
		ref := Ref{Namespace: ap.Namespace, Name: ap.Name}
		key := StatusKey{Kind: KindAuthorizationPolicy, Ref: ref}
		full, err := translateAuthorizationPolicy(ap, m.RootNamespace)
		if err != nil {
			reason := ReasonInvalid
			if errors.Is(err, errUnsupported) {
				reason = ReasonUnsupportedValue
			}
			m.Status[key] = rejected(ap.Generation, reason, err.Error())
			continue
		}
		p := &Policy{Name: ref.String(), Ref: ref}
		targets := ap.Spec.TargetRefs
		if ap.Spec.TargetRef != nil {
			targets = append(targets, *ap.Spec.TargetRef)
		}
		if len(targets) > 0 {
			if err := m.setTargets(full, targets, ap.Namespace); err != nil {
				m.Status[key] = rejected(ap.Generation, ReasonTargetNotFound, err.Error())
				continue
			}
			p.Waypoint = full
			m.Policies[p.Name] = p
			m.Status[key] = accepted(ap.Generation, "enforced by the waypoint of its targetRefs")
			continue
		}
		l4, changed := ForZtunnel(full)
		p.Ztunnel = l4
		if full.Scope == workload.Scope_WORKLOAD_SELECTOR {
			p.selector = labels.SelectorFromSet(ap.Spec.Selector.MatchLabels)
		}
		m.Policies[p.Name] = p
		st := accepted(ap.Generation, "enforced by ztunnel")
		if changed {
			st.Conditions = append(st.Conditions, metav1.Condition{
				Type: securityv1.ConditionWarning, Status: metav1.ConditionTrue, Reason: ReasonL7FailClosed,
				Message: "L7 fields (hosts, methods, paths, request principals, headers, remote IPs) cannot be " +
					"enforced by ztunnel: ALLOW rules using them are dropped, DENY rules are enforced without them. " +
					"Use targetRefs to a waypoint to enforce them.",
				ObservedGeneration: ap.Generation,
			})
		}
		m.Status[key] = st
	}
}

// setTargets checks a policy's targetRefs and records them on the Authorization.
func (m *Model) setTargets(full *workload.Authorization, targets []securityv1.PolicyTargetReference, ns string) error {
	for _, t := range targets {
		if t.Namespace != "" && t.Namespace != ns {
			return fmt.Errorf("targetRef %s %s/%s: must be in the policy's namespace %s", t.Kind, t.Namespace, t.Name, ns)
		}
		switch {
		case t.Kind == "Gateway" && t.Group == gwv1.GroupName:
			if m.Waypoints[Ref{Namespace: ns, Name: t.Name}] == nil {
				return fmt.Errorf("targetRef Gateway %s/%s: no waypoint Gateway (class istio-waypoint) of that name", ns, t.Name)
			}
		case t.Kind == "Service" && (t.Group == "" || t.Group == "core"):
			if m.Services[ns+"/"+t.Name+"."+ns+".svc."+m.DomainSuffix] == nil {
				return fmt.Errorf("targetRef Service %s/%s: no such Service", ns, t.Name)
			}
		default:
			return fmt.Errorf("targetRef %s/%s %s: only Gateway (gateway.networking.k8s.io) and Service targets are supported", t.Group, t.Kind, t.Name)
		}
		full.Targets = append(full.Targets, &workload.PolicyTarget{Kind: t.Kind, Namespace: ns, Name: t.Name})
	}
	return nil
}

func (m *Model) addPeerAuthentications(pas []*securityv1.PeerAuthentication) {
	idx := indexPeerAuthns(pas, m.RootNamespace)
	for _, pa := range pas {
		key := StatusKey{Kind: KindPeerAuthentication, Ref: Ref{Namespace: pa.Namespace, Name: pa.Name}}
		auth, err := convertPeerAuthentication(pa, idx, m.RootNamespace)
		if err != nil {
			m.Status[key] = rejected(pa.Generation, ReasonInvalid, err.Error())
			continue
		}
		st := accepted(pa.Generation, "enforced by ztunnel")
		hasSelector := pa.Spec.Selector != nil && len(pa.Spec.Selector.MatchLabels) > 0
		if len(pa.Spec.PortLevelMTLS) > 0 && !hasSelector {
			st.Conditions = append(st.Conditions, metav1.Condition{
				Type: securityv1.ConditionWarning, Status: metav1.ConditionTrue, Reason: ReasonPortLevelIgnored,
				Message: "portLevelMtls needs a selector; it is ignored", ObservedGeneration: pa.Generation,
			})
		}
		m.Status[key] = st
		if auth == nil {
			continue
		}
		p := &Policy{Name: auth.Namespace + "/" + auth.Name, Ref: key.Ref, Ztunnel: auth}
		p.selects = func(w *Workload) bool { return idx.forWorkload(w) == pa }
		m.Policies[p.Name] = p
	}
}

func accepted(gen int64, msg string) ObjectStatus {
	return ObjectStatus{Generation: gen, Conditions: []metav1.Condition{{
		Type: securityv1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: msg, ObservedGeneration: gen,
	}}}
}

func rejected(gen int64, reason, msg string) ObjectStatus {
	return ObjectStatus{Generation: gen, Conditions: []metav1.Condition{{
		Type: securityv1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: reason,
		Message: fmt.Sprintf("not enforced: %s", msg), ObservedGeneration: gen,
	}}}
}
