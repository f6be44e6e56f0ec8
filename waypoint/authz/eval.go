package authz

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DeniedBody is the response body of a request denied by policy, as Istio
// (Envoy's RBAC filter) sends it with status 403.
const DeniedBody = "RBAC: access denied"

// Request is what policies are evaluated against.
type Request struct {
	// Peer is the verified identity of the client (from HBONE); zero when
	// the client is not authenticated.
	Peer spiffeid.ID
	// SourceIP is the original client address; zero when unknown.
	SourceIP        netip.Addr
	DestinationIP   netip.Addr
	DestinationPort uint16

	// HTTP is false for TCP traffic, where the L7 fields below are unset.
	HTTP   bool
	Host   string
	Method string
	// Path is the normalized path without the query.
	Path   string
	Header http.Header
}

// Decision is the outcome of an evaluation.
type Decision struct {
	Allow bool
	// Policy is the "namespace/name" of the policy that decided: the
	// matching DENY or ALLOW policy; empty when the request was allowed
	// because no ALLOW policy applies, or denied because none matched.
	Policy string
	// DryRun lists the dry-run and AUDIT policies that matched, for logs.
	DryRun []string
}

// Set is a validated, immutable set of policies applying to one
// destination. A nil Set allows everything.
type Set struct {
	deny, allow, audit []*Policy
}

// NewSet validates policies and groups them by action. Invalid policies
// are not silently dropped: an invalid ALLOW would widen access if left
// out, and an invalid DENY too, so NewSet fails and the caller keeps its
// previous set (and reports the error on the policy's status).
func NewSet(policies []Policy) (*Set, error) {
	s := &Set{}
	var errs []error
	for i := range policies {
		p, err := policies[i].compiled()
		if err == nil && p.Action > Audit {
			err = fmt.Errorf("unsupported action %d", p.Action)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("authorization policy %s: %w", policies[i].Key(), err))
			continue
		}
		switch {
		case p.DryRun || p.Action == Audit:
			s.audit = append(s.audit, p)
		case p.Action == Deny:
			s.deny = append(s.deny, p)
		default:
			s.allow = append(s.allow, p)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Evaluate decides req: DENY first, then no ALLOW policy -> allow, then a
// matching ALLOW -> allow, else deny.
func (s *Set) Evaluate(req *Request) Decision {
	if s == nil {
		return Decision{Allow: true}
	}
	in := newInput(req)
	var d Decision
	for _, p := range s.audit {
		if p.matches(&in) {
			d.DryRun = append(d.DryRun, p.Key())
		}
	}
	for _, p := range s.deny {
		if p.matches(&in) {
			d.Policy = p.Key()
			return d
		}
	}
	if len(s.allow) == 0 {
		d.Allow = true
		return d
	}
	for _, p := range s.allow {
		if p.matches(&in) {
			d.Allow, d.Policy = true, p.Key()
			return d
		}
	}
	return d
}

// input is a Request with derived values computed once.
type input struct {
	*Request
	principal, namespace string
	remote               []netip.Addr // X-Forwarded-For
	remoteParsed         bool
}

func newInput(req *Request) input {
	in := input{Request: req}
	if !req.Peer.IsZero() {
		in.principal = strings.TrimPrefix(req.Peer.String(), "spiffe://")
		// Mesh identities are /ns/<ns>/sa/<sa>.
		if rest, ok := strings.CutPrefix(req.Peer.Path(), "/ns/"); ok {
			in.namespace, _, _ = strings.Cut(rest, "/")
		}
	}
	return in
}

func (p *Policy) matches(in *input) bool {
	l7Ignored := p.Action != Allow // DENY (and audit) drop L7 on TCP
	for ri := range p.Rules {
		if p.Rules[ri].matches(in, l7Ignored) {
			return true
		}
	}
	return false
}

func (r *Rule) matches(in *input, l7Ignored bool) bool {
	for ci := range r.Clauses {
		c := &r.Clauses[ci]
		if len(c.Matches) == 0 {
			continue
		}
		if !slices.ContainsFunc(c.Matches, func(m Match) bool { return m.matches(in, l7Ignored) }) {
			return false
		}
	}
	return true
}

func (m *Match) hasL7() bool {
	return len(m.Hosts)+len(m.NotHosts)+len(m.Methods)+len(m.NotMethods)+len(m.Paths)+
		len(m.NotPaths)+len(m.Headers)+len(m.RemoteIPs)+len(m.NotRemoteIPs)+
		len(m.RequestPrincipals)+len(m.NotRequestPrincipals) > 0
}

func (m *Match) matches(in *input, l7Ignored bool) bool {
	if !in.HTTP && m.hasL7() && !l7Ignored {
		return false
	}
	ok := strings2(m.Principals, m.NotPrincipals, in.principal, (*StringMatch).Matches) &&
		strings2(m.Namespaces, m.NotNamespaces, in.namespace, (*StringMatch).Matches) &&
		prefixes(m.SourceIPs, m.NotSourceIPs, in.SourceIP) &&
		prefixes(m.DestinationIPs, m.NotDestinationIPs, in.DestinationIP) &&
		ports(m.Ports, m.NotPorts, in.DestinationPort)
	if !ok || !in.HTTP {
		return ok
	}
	return hosts(m.Hosts, m.NotHosts, in.Host) &&
		strings2(m.Methods, m.NotMethods, in.Method, (*StringMatch).Matches) &&
		strings2(m.Paths, m.NotPaths, in.Path, (*StringMatch).Matches) &&
		headers(m.Headers, in.Header) &&
		strings2(m.RequestPrincipals, m.NotRequestPrincipals, "", (*StringMatch).Matches) &&
		in.remoteMatches(m.RemoteIPs, m.NotRemoteIPs)
}

// strings2 checks a value against a positive and a negative list.
func strings2(yes, no []StringMatch, v string, match func(*StringMatch, string) bool) bool {
	if len(yes) > 0 && !slices.ContainsFunc(yes, func(s StringMatch) bool { return match(&s, v) }) {
		return false
	}
	return !slices.ContainsFunc(no, func(s StringMatch) bool { return match(&s, v) })
}

// hosts matches the authority case-insensitively; a value without a port
// matches the authority with or without one (Istio).
func hosts(yes, no []StringMatch, authority string) bool {
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	match := func(s *StringMatch, _ string) bool {
		return s.matchesFold(authority) || host != authority && s.matchesFold(host)
	}
	return strings2(yes, no, authority, match)
}

func headers(hs []HeaderMatch, h http.Header) bool {
	for _, hm := range hs {
		v := strings.Join(h.Values(hm.Name), ",")
		if !strings2(hm.Values, hm.NotValues, v, (*StringMatch).Matches) {
			return false
		}
		if len(hm.Values) == 0 && len(hm.NotValues) == 0 && v == "" {
			return false
		}
	}
	return true
}

func prefixes(yes, no []netip.Prefix, a netip.Addr) bool {
	contains := func(p netip.Prefix) bool { return a.IsValid() && p.Contains(a.Unmap()) }
	if len(yes) > 0 && !slices.ContainsFunc(yes, contains) {
		return false
	}
	return !slices.ContainsFunc(no, contains)
}

func ports(yes, no []uint16, p uint16) bool {
	if len(yes) > 0 && !slices.Contains(yes, p) {
		return false
	}
	return !slices.Contains(no, p)
}

// remoteMatches checks the X-Forwarded-For client (the first address; the
// source IP when the header is absent or unparsable), as Istio's remoteIpBlocks.
func (in *input) remoteMatches(yes, no []netip.Prefix) bool {
	if len(yes) == 0 && len(no) == 0 {
		return true
	}
	if !in.remoteParsed {
		in.remoteParsed = true
		first, _, _ := strings.Cut(in.Header.Get("X-Forwarded-For"), ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			in.remote = []netip.Addr{a}
		} else if in.SourceIP.IsValid() {
			in.remote = []netip.Addr{in.SourceIP}
		}
	}
	var a netip.Addr
	if len(in.remote) > 0 {
		a = in.remote[0]
	}
	return prefixes(yes, no, a)
}
