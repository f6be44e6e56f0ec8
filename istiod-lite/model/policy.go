package model

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/labels"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/api/workload"
)

// Policy is an AuthorizationPolicy (or a converted PeerAuthentication) as the model
// sees it.
type Policy struct {
	// Name is the Authorization resource name, "<namespace>/<name>".
	Name string
	Ref  Ref
	// Ztunnel is what ztunnels enforce (L4 only, fail-closed), nil if they enforce
	// nothing of this policy (targetRefs policies, rejected policies).
	Ztunnel *workload.Authorization
	// Waypoint is what waypoints enforce (L4 and L7), nil for selector policies.
	Waypoint *workload.Authorization
	// selector picks workloads for WORKLOAD_SELECTOR scope; nil otherwise.
	selector labels.Selector
	// selects, for converted PeerAuthentications, is the explicit workload set.
	selects func(*Workload) bool
}

// Status condition reasons written on policies.
const (
	ReasonAccepted         = "Accepted"
	ReasonInvalid          = "Invalid"
	ReasonUnsupportedValue = "UnsupportedValue"
	ReasonTargetNotFound   = "TargetNotFound"
	ReasonL7FailClosed     = "L7FieldsEnforcedFailClosed"
	ReasonPortLevelIgnored = "PortLevelMtlsIgnored"
)

// errUnsupported marks valid Istio input Ambit does not implement.
var errUnsupported = errors.New("unsupported")

// translateAuthorizationPolicy converts an AuthorizationPolicy into its full
// Authorization (L4 and L7 fields). It fails on values that cannot be enforced.
func translateAuthorizationPolicy(ap *securityv1.AuthorizationPolicy, rootNS string) (*workload.Authorization, error) {
	out := &workload.Authorization{Name: ap.Name, Namespace: ap.Namespace}
	switch ap.Spec.Action {
	case "", securityv1.ActionAllow:
		out.Action = workload.Action_ALLOW
	case securityv1.ActionDeny:
		out.Action = workload.Action_DENY
	case securityv1.ActionAudit:
		out.Action = workload.Action_ALLOW
		out.DryRun = true
	case securityv1.ActionCustom:
		return nil, fmt.Errorf("%w: action CUSTOM (external authorization) is not implemented", errUnsupported)
	default:
		return nil, fmt.Errorf("unknown action %q", ap.Spec.Action)
	}
	switch {
	case ap.Spec.Selector != nil && len(ap.Spec.Selector.MatchLabels) > 0:
		out.Scope = workload.Scope_WORKLOAD_SELECTOR
	case ap.Namespace == rootNS:
		out.Scope = workload.Scope_GLOBAL
	default:
		out.Scope = workload.Scope_NAMESPACE
	}
	for i, r := range ap.Spec.Rules {
		rule, err := translateRule(r, ap.Namespace)
		if err != nil {
			return nil, fmt.Errorf("rules[%d]: %w", i, err)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

func translateRule(r securityv1.Rule, ns string) (*workload.Rule, error) {
	rule := &workload.Rule{}
	if len(r.From) > 0 {
		c := &workload.Clause{}
		for i, f := range r.From {
			m, err := sourceMatch(f.Source, ns)
			if err != nil {
				return nil, fmt.Errorf("from[%d]: %w", i, err)
			}
			c.Matches = append(c.Matches, m)
		}
		rule.Clauses = append(rule.Clauses, c)
	}
	if len(r.To) > 0 {
		c := &workload.Clause{}
		for i, t := range r.To {
			m, err := operationMatch(t.Operation)
			if err != nil {
				return nil, fmt.Errorf("to[%d]: %w", i, err)
			}
			c.Matches = append(c.Matches, m)
		}
		rule.Clauses = append(rule.Clauses, c)
	}
	for i, cond := range r.When {
		m, err := conditionMatch(cond)
		if err != nil {
			return nil, fmt.Errorf("when[%d]: %w", i, err)
		}
		rule.Clauses = append(rule.Clauses, &workload.Clause{Matches: []*workload.Match{m}})
	}
	return rule, nil
}

func sourceMatch(s *securityv1.Source, ns string) (*workload.Match, error) {
	m := &workload.Match{}
	if s == nil {
		return m, nil
	}
	var err error
	m.Principals = stringMatches(s.Principals)
	m.NotPrincipals = stringMatches(s.NotPrincipals)
	m.Principals = append(m.Principals, serviceAccountMatches(s.ServiceAccounts, ns)...)
	m.NotPrincipals = append(m.NotPrincipals, serviceAccountMatches(s.NotServiceAccounts, ns)...)
	m.Namespaces = stringMatches(s.Namespaces)
	m.NotNamespaces = stringMatches(s.NotNamespaces)
	m.RequestPrincipals = stringMatches(s.RequestPrincipals)
	m.NotRequestPrincipals = stringMatches(s.NotRequestPrincipals)
	for _, f := range []struct {
		name string
		in   []string
		out  *[]*workload.IPPrefix
	}{
		{"ipBlocks", s.IPBlocks, &m.SourceIps},
		{"notIpBlocks", s.NotIPBlocks, &m.NotSourceIps},
		{"remoteIpBlocks", s.RemoteIPBlocks, &m.RemoteIps},
		{"notRemoteIpBlocks", s.NotRemoteIPBlocks, &m.NotRemoteIps},
	} {
		if *f.out, err = prefixes(f.in); err != nil {
			return nil, fmt.Errorf("source.%s: %w", f.name, err)
		}
	}
	return m, nil
}

func operationMatch(o *securityv1.Operation) (*workload.Match, error) {
	m := &workload.Match{}
	if o == nil {
		return m, nil
	}
	var err error
	if m.DestinationPorts, err = ports(o.Ports); err != nil {
		return nil, fmt.Errorf("operation.ports: %w", err)
	}
	if m.NotDestinationPorts, err = ports(o.NotPorts); err != nil {
		return nil, fmt.Errorf("operation.notPorts: %w", err)
	}
	m.Hosts, m.NotHosts = stringMatches(o.Hosts), stringMatches(o.NotHosts)
	m.Methods, m.NotMethods = stringMatches(o.Methods), stringMatches(o.NotMethods)
	m.Paths, m.NotPaths = stringMatches(o.Paths), stringMatches(o.NotPaths)
	return m, nil
}

// conditionMatch converts a `when` condition. Keys follow Istio's authorization
// policy conditions; keys Ambit cannot evaluate are an error, never ignored.
func conditionMatch(c securityv1.Condition) (*workload.Match, error) {
	m := &workload.Match{}
	var err error
	switch key := c.Key; {
	case key == "source.ip":
		if m.SourceIps, err = prefixes(c.Values); err == nil {
			m.NotSourceIps, err = prefixes(c.NotValues)
		}
	case key == "remote.ip":
		if m.RemoteIps, err = prefixes(c.Values); err == nil {
			m.NotRemoteIps, err = prefixes(c.NotValues)
		}
	case key == "destination.ip":
		if m.DestinationIps, err = prefixes(c.Values); err == nil {
			m.NotDestinationIps, err = prefixes(c.NotValues)
		}
	case key == "destination.port":
		if m.DestinationPorts, err = ports(c.Values); err == nil {
			m.NotDestinationPorts, err = ports(c.NotValues)
		}
	case key == "source.namespace":
		m.Namespaces, m.NotNamespaces = stringMatches(c.Values), stringMatches(c.NotValues)
	case key == "source.principal":
		m.Principals, m.NotPrincipals = stringMatches(c.Values), stringMatches(c.NotValues)
	case key == "request.auth.principal":
		m.RequestPrincipals, m.NotRequestPrincipals = stringMatches(c.Values), stringMatches(c.NotValues)
	case strings.HasPrefix(key, "request.headers[") && strings.HasSuffix(key, "]") && len(key) > len("request.headers[]"):
		name := strings.ToLower(key[len("request.headers[") : len(key)-1])
		m.RequestHeaders = []*workload.HeaderMatch{{Name: name, Values: stringMatches(c.Values), NotValues: stringMatches(c.NotValues)}}
	default:
		return nil, fmt.Errorf("%w: condition key %q (supported: source.ip, remote.ip, source.namespace, source.principal, "+
			"destination.ip, destination.port, request.auth.principal, request.headers[NAME])", errUnsupported, key)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Key, err)
	}
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		return nil, fmt.Errorf("condition %q has neither values nor notValues", c.Key)
	}
	return m, nil
}

// stringMatches converts Istio string patterns: "*" any non-empty value, "x*" prefix,
// "*x" suffix, otherwise exact.
func stringMatches(in []string) []*workload.StringMatch {
	var out []*workload.StringMatch
	for _, s := range in {
		var m *workload.StringMatch
		switch {
		case s == "*":
			m = &workload.StringMatch{MatchType: &workload.StringMatch_Presence{Presence: true}}
		case strings.HasSuffix(s, "*"):
			m = &workload.StringMatch{MatchType: &workload.StringMatch_Prefix{Prefix: strings.TrimSuffix(s, "*")}}
		case strings.HasPrefix(s, "*"):
			m = &workload.StringMatch{MatchType: &workload.StringMatch_Suffix{Suffix: strings.TrimPrefix(s, "*")}}
		default:
			m = &workload.StringMatch{MatchType: &workload.StringMatch_Exact{Exact: s}}
		}
		out = append(out, m)
	}
	return out
}

// serviceAccountMatches turns "sa" (policy namespace) or "ns/sa" into principals.
func serviceAccountMatches(in []string, ns string) []*workload.StringMatch {
	var out []*workload.StringMatch
	for _, s := range in {
		sns, sa, ok := strings.Cut(s, "/")
		if !ok {
			sns, sa = ns, s
		}
		out = append(out, &workload.StringMatch{MatchType: &workload.StringMatch_Suffix{Suffix: "/ns/" + sns + "/sa/" + sa}})
	}
	return out
}

func prefixes(in []string) ([]*workload.IPPrefix, error) {
	var out []*workload.IPPrefix
	for _, s := range in {
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(s)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		p = p.Masked()
		out = append(out, &workload.IPPrefix{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())})
	}
	return out, nil
}

func ports(in []string) ([]uint32, error) {
	var out []uint32
	for _, s := range in {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port number (1-65535)", s)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// hasL7 says whether a match uses fields only a waypoint can evaluate.
func hasL7(m *workload.Match) bool {
	return len(m.Hosts)+len(m.NotHosts)+len(m.Methods)+len(m.NotMethods)+len(m.Paths)+len(m.NotPaths)+
		len(m.RequestPrincipals)+len(m.NotRequestPrincipals)+len(m.RequestHeaders)+
		len(m.RemoteIps)+len(m.NotRemoteIps) > 0
}

func stripL7(m *workload.Match) {
	m.Hosts, m.NotHosts, m.Methods, m.NotMethods, m.Paths, m.NotPaths = nil, nil, nil, nil, nil, nil
	m.RequestPrincipals, m.NotRequestPrincipals, m.RequestHeaders = nil, nil, nil
	m.RemoteIps, m.NotRemoteIps = nil, nil
}

// ForZtunnel returns the part of a full Authorization a ztunnel enforces, failing
// closed (DESIGN.md 1): an ALLOW rule using L7 fields is dropped (allows less); in a
// DENY rule the L7 parts are removed (denies more). changed reports a difference.
func ForZtunnel(full *workload.Authorization) (l4 *workload.Authorization, changed bool) {
	l4 = proto.CloneOf(full)
	l4.Rules = l4.Rules[:0]
	for _, r := range full.Rules {
		r = proto.CloneOf(r)
		l7 := false
		for _, c := range r.Clauses {
			for _, m := range c.Matches {
				if hasL7(m) {
					l7 = true
					stripL7(m)
				}
			}
		}
		if l7 {
			changed = true
			if full.Action == workload.Action_ALLOW {
				continue
			}
		}
		l4.Rules = append(l4.Rules, r)
	}
	return l4, changed
}
