// Package authz evaluates L4 authorization (AuthorizationPolicy and the DENY
// policies PeerAuthentication STRICT is converted to) for connections arriving
// at a ztunnel, with Istio's semantics: a matching DENY denies; if no ALLOW
// policy applies the connection is allowed; else an ALLOW must match.
package authz

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/api/workload"
)

// Action is what a policy does when it matches.
type Action int

// Policy actions.
const (
	Allow Action = iota
	Deny
)

// String names the action as Istio does.
func (a Action) String() string {
	if a == Deny {
		return "DENY"
	}
	return "ALLOW"
}

// Scope says which workloads a policy applies to.
type Scope int

// Policy scopes, as in the Authorization resource.
const (
	// Global policies apply to every workload.
	Global Scope = iota
	// Namespace policies apply to the workloads of their namespace.
	Namespace
	// Selector policies apply to the workloads that name them.
	Selector
)

// Conn is what a policy can see of a connection.
type Conn struct {
	// Peer is the client's verified identity; zero for plaintext.
	Peer spiffeid.ID
	// Src is the original client address, Dst the destination (a local
	// workload's address) and DstPort the destination port.
	Src, Dst netip.Addr
	DstPort  uint16
}

// Policy is a decoded Authorization resource. It is immutable.
type Policy struct {
	// Name is the resource name, "<namespace>/<name>".
	Name      string
	Namespace string
	Scope     Scope
	Action    Action
	// DryRun policies (AUDIT) are evaluated for logs only.
	DryRun bool
	// Waypoint is set for targetRefs policies, which the waypoint enforces and
	// ztunnel ignores.
	Waypoint bool
	rules    [][][]match
}

// match is one decoded Match; the fields mirror workload.Match.
type match struct {
	namespaces, notNamespaces []stringMatch
	principals, notPrincipals []stringMatch
	srcIPs, notSrcIPs         []netip.Prefix
	dstIPs, notDstIPs         []netip.Prefix
	ports, notPorts           []uint16
	// l7 is set when the match carries HTTP fields ztunnel cannot see. In
	// an ALLOW policy such a match never matches; in a DENY policy the L7
	// part is ignored so that it denies more (fail closed, DESIGN.md 1).
	l7 bool
}

type stringMatch struct {
	kind  int // exact, prefix, suffix, presence
	value string
}

const (
	exact = iota
	prefix
	suffix
	presence
)

func (m stringMatch) matches(s string) bool {
	switch m.kind {
	case exact:
		return s == m.value
	case prefix:
		return strings.HasPrefix(s, m.value)
	case suffix:
		return strings.HasSuffix(s, m.value)
	}
	return s != ""
}

// Decode checks and converts an Authorization resource.
func Decode(a *workload.Authorization) (*Policy, error) {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return nil, fmt.Errorf("authorization %q/%q: name and namespace are required", a.GetNamespace(), a.GetName())
	}
	p := &Policy{
		Name:      a.GetNamespace() + "/" + a.GetName(),
		Namespace: a.GetNamespace(),
		DryRun:    a.GetDryRun(),
		Waypoint:  len(a.GetTargets()) > 0,
	}
	switch a.GetScope() {
	case workload.Scope_GLOBAL:
		p.Scope = Global
	case workload.Scope_NAMESPACE:
		p.Scope = Namespace
	case workload.Scope_WORKLOAD_SELECTOR:
		p.Scope = Selector
	default:
		return nil, fmt.Errorf("authorization %s: unknown scope %v", p.Name, a.GetScope())
	}
	switch a.GetAction() {
	case workload.Action_ALLOW:
		p.Action = Allow
	case workload.Action_DENY:
		p.Action = Deny
	default:
		return nil, fmt.Errorf("authorization %s: unknown action %v", p.Name, a.GetAction())
	}
	for i, r := range a.GetRules() {
		var rule [][]match
		for j, c := range r.GetClauses() {
			var clause []match
			for k, m := range c.GetMatches() {
				dm, err := decodeMatch(m)
				if err != nil {
					return nil, fmt.Errorf("authorization %s: rules[%d].clauses[%d].matches[%d]: %w", p.Name, i, j, k, err)
				}
				clause = append(clause, dm)
			}
			rule = append(rule, clause)
		}
		p.rules = append(p.rules, rule)
	}
	return p, nil
}

func decodeMatch(m *workload.Match) (match, error) {
	var out match
	var err error
	for _, f := range []struct {
		in  []*workload.StringMatch
		out *[]stringMatch
	}{
		{m.GetNamespaces(), &out.namespaces}, {m.GetNotNamespaces(), &out.notNamespaces},
		{m.GetPrincipals(), &out.principals}, {m.GetNotPrincipals(), &out.notPrincipals},
	} {
		if *f.out, err = decodeStrings(f.in); err != nil {
			return out, err
		}
	}
	for _, f := range []struct {
		in  []*workload.IPPrefix
		out *[]netip.Prefix
	}{
		{m.GetSourceIps(), &out.srcIPs}, {m.GetNotSourceIps(), &out.notSrcIPs},
		{m.GetDestinationIps(), &out.dstIPs}, {m.GetNotDestinationIps(), &out.notDstIPs},
	} {
		if *f.out, err = decodePrefixes(f.in); err != nil {
			return out, err
		}
	}
	if out.ports, err = decodePorts(m.GetDestinationPorts()); err != nil {
		return out, err
	}
	if out.notPorts, err = decodePorts(m.GetNotDestinationPorts()); err != nil {
		return out, err
	}
	out.l7 = len(m.GetHosts())+len(m.GetNotHosts())+len(m.GetMethods())+len(m.GetNotMethods())+
		len(m.GetPaths())+len(m.GetNotPaths())+len(m.GetRequestPrincipals())+len(m.GetNotRequestPrincipals())+
		len(m.GetRequestHeaders())+len(m.GetRemoteIps())+len(m.GetNotRemoteIps()) > 0
	return out, nil
}

func decodeStrings(in []*workload.StringMatch) ([]stringMatch, error) {
	var out []stringMatch
	for _, s := range in {
		switch t := s.GetMatchType().(type) {
		case *workload.StringMatch_Exact:
			out = append(out, stringMatch{exact, t.Exact})
		case *workload.StringMatch_Prefix:
			out = append(out, stringMatch{prefix, t.Prefix})
		case *workload.StringMatch_Suffix:
			out = append(out, stringMatch{suffix, t.Suffix})
		case *workload.StringMatch_Presence:
			out = append(out, stringMatch{presence, ""})
		default:
			return nil, fmt.Errorf("string match without a type")
		}
	}
	return out, nil
}

func decodePrefixes(in []*workload.IPPrefix) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range in {
		a, ok := netip.AddrFromSlice(p.GetAddress())
		if !ok {
			return nil, fmt.Errorf("ip prefix: address of %d bytes", len(p.GetAddress()))
		}
		if p.GetLength() > uint32(a.BitLen()) {
			return nil, fmt.Errorf("ip prefix %s/%d: length too long", a, p.GetLength())
		}
		out = append(out, netip.PrefixFrom(a, int(p.GetLength())).Masked())
	}
	return out, nil
}

func decodePorts(in []uint32) ([]uint16, error) {
	var out []uint16
	for _, p := range in {
		if p == 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range", p)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

// AppliesTo says whether p governs a workload of namespace ns that names
// the selector policies in selected.
func (p *Policy) AppliesTo(ns string, selected []string) bool {
	if p.Waypoint {
		return false
	}
	switch p.Scope {
	case Global:
		return true
	case Namespace:
		return p.Namespace == ns
	}
	return slices.Contains(selected, p.Name)
}

// Matches says whether c matches any of p's rules.
func (p *Policy) Matches(c Conn) bool {
	for _, rule := range p.rules {
		if p.ruleMatches(rule, c) {
			return true
		}
	}
	return false
}

func (p *Policy) ruleMatches(rule [][]match, c Conn) bool {
	for _, clause := range rule {
		ok := false
		for _, m := range clause {
			if p.matchMatches(m, c) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (p *Policy) matchMatches(m match, c Conn) bool {
	if m.l7 && p.Action == Allow {
		return false
	}
	var principal, ns string
	if !c.Peer.IsZero() {
		principal = c.Peer.TrustDomain().Name() + c.Peer.Path()
		ns = peerNamespace(c.Peer)
	}
	return anyOrEmpty(m.namespaces, ns) && !anyString(m.notNamespaces, ns) &&
		anyOrEmpty(m.principals, principal) && !anyString(m.notPrincipals, principal) &&
		prefixOrEmpty(m.srcIPs, c.Src) && !anyPrefix(m.notSrcIPs, c.Src) &&
		prefixOrEmpty(m.dstIPs, c.Dst) && !anyPrefix(m.notDstIPs, c.Dst) &&
		(len(m.ports) == 0 || slices.Contains(m.ports, c.DstPort)) && !slices.Contains(m.notPorts, c.DstPort)
}

// peerNamespace is the namespace of a Kubernetes SPIFFE id
// (/ns/<ns>/sa/<sa>), "" for another shape.
func peerNamespace(id spiffeid.ID) string {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) == 4 && segs[0] == "ns" && segs[2] == "sa" {
		return segs[1]
	}
	return ""
}

func anyString(ms []stringMatch, s string) bool {
	for _, m := range ms {
		if m.matches(s) {
			return true
		}
	}
	return false
}

func anyOrEmpty(ms []stringMatch, s string) bool { return len(ms) == 0 || anyString(ms, s) }

func anyPrefix(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func prefixOrEmpty(ps []netip.Prefix, a netip.Addr) bool { return len(ps) == 0 || anyPrefix(ps, a) }

// Decision is the outcome of Evaluate.
type Decision struct {
	Allowed bool
	// Policy names the policy that decided ("" when none applied or when no
	// ALLOW matched), for logs.
	Policy string
	// Reason says why, for logs.
	Reason string
}

// Evaluate decides c against the policies that apply to the destination
// workload (see AppliesTo). Dry-run policies do not count.
func Evaluate(policies []*Policy, c Conn) Decision {
	for _, p := range policies {
		if p.Action == Deny && !p.DryRun && p.Matches(c) {
			return Decision{Policy: p.Name, Reason: "denied by DENY policy"}
		}
	}
	anyAllow := false
	for _, p := range policies {
		if p.Action != Allow || p.DryRun {
			continue
		}
		anyAllow = true
		if p.Matches(c) {
			return Decision{Allowed: true, Policy: p.Name, Reason: "allowed by ALLOW policy"}
		}
	}
	if anyAllow {
		return Decision{Reason: "no ALLOW policy matched"}
	}
	return Decision{Allowed: true, Reason: "no ALLOW policy applies"}
}
