package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Action is what a matching policy does.
type Action uint8

// Policy actions. CUSTOM is refused before it gets here.
const (
	Allow Action = iota
	Deny
	// Audit policies are evaluated and reported, never enforced.
	Audit
)

func (a Action) String() string {
	switch a {
	case Deny:
		return "DENY"
	case Audit:
		return "AUDIT"
	}
	return "ALLOW"
}

// Policy is one AuthorizationPolicy as the waypoint enforces it. The
// control plane sends only the policies that target this waypoint or its
// services (targetRefs); which of them apply to a destination is the
// caller's choice.
type Policy struct {
	Namespace, Name string
	Action          Action
	// DryRun policies (annotation istio.io/dry-run) are evaluated and
	// reported in Decision.DryRun, never enforced.
	DryRun bool
	// Rules: the policy matches when any rule matches; a policy without
	// rules matches nothing (an ALLOW without rules denies everything).
	Rules []Rule
}

// Key returns "namespace/name".
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

// Rule matches when all its clauses match (Istio: from, to and each when
// condition are clauses).
type Rule struct {
	Clauses []Clause
}

// Clause matches when any of its matches matches; an empty clause matches.
type Clause struct {
	Matches []Match
}

// Match matches when every non-empty field matches and no Not field does.
type Match struct {
	// Principals of the peer identity without "spiffe://"
	// (cluster.local/ns/a/sa/b) and namespaces of it.
	Principals, NotPrincipals []StringMatch
	Namespaces, NotNamespaces []StringMatch
	// SourceIPs is the original client (HBONE Forwarded) address.
	SourceIPs, NotSourceIPs           []netip.Prefix
	DestinationIPs, NotDestinationIPs []netip.Prefix
	Ports, NotPorts                   []uint16

	// L7 fields. On TCP traffic they cannot be checked: an ALLOW match
	// using them never matches, a DENY match ignores them (fail closed).
	Hosts, NotHosts     []StringMatch
	Methods, NotMethods []StringMatch
	Paths, NotPaths     []StringMatch
	Headers             []HeaderMatch
	// RequestPrincipals are JWT principals. The waypoint validates no JWTs
	// yet, so every request has none: a positive list never matches.
	RequestPrincipals, NotRequestPrincipals []StringMatch
	// RemoteIPs are client addresses from X-Forwarded-For.
	RemoteIPs, NotRemoteIPs []netip.Prefix
}

// HeaderMatch matches a request header when one of Values matches (any
// value when Values is empty) and none of NotValues does.
type HeaderMatch struct {
	Name              string
	Values, NotValues []StringMatch
}

// MatchType is how a StringMatch compares.
type MatchType uint8

// String match types.
const (
	Exact    MatchType = iota
	Prefix             // Istio "abc*"
	Suffix             // Istio "*abc"
	Presence           // Istio "*": any non-empty value
	Template           // Istio path template: {*} one segment, {**} the rest
)

// StringMatch matches a string. Build it with ParseValue or ParsePath from
// Istio's syntax, or directly.
type StringMatch struct {
	Type  MatchType
	Value string
	re    *regexp.Regexp // Template
}

// ParseValue reads Istio's wildcard syntax for principals, namespaces,
// hosts, methods and header values: "*" any non-empty value, "abc*" a
// prefix, "*abc" a suffix, else exact.
func ParseValue(s string) StringMatch {
	switch {
	case s == "*":
		return StringMatch{Type: Presence}
	case strings.HasSuffix(s, "*"):
		return StringMatch{Type: Prefix, Value: s[:len(s)-1]}
	case strings.HasPrefix(s, "*"):
		return StringMatch{Type: Suffix, Value: s[1:]}
	}
	return StringMatch{Type: Exact, Value: s}
}

// ParsePath reads an Istio path: the wildcard syntax of ParseValue, or a
// template ("/foo/{*}/bar", "/foo/{**}") where {*} matches one path segment
// and {**} any remaining segments and must come last.
func ParsePath(s string) (StringMatch, error) {
	if !strings.Contains(s, "{") {
		return ParseValue(s), nil
	}
	re, err := compileTemplate(s)
	if err != nil {
		return StringMatch{}, err
	}
	return StringMatch{Type: Template, Value: s, re: re}, nil
}

var errTemplate = errors.New("invalid path template")

func compileTemplate(s string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("%w %q: must start with /", errTemplate, s)
	}
	segs := strings.Split(s[1:], "/")
	var b strings.Builder
	b.WriteString("^")
	for i, seg := range segs {
		b.WriteString("/")
		switch {
		case seg == "{*}":
			b.WriteString("[^/]+")
		case seg == "{**}":
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%w %q: {**} must be the last segment", errTemplate, s)
			}
			b.WriteString(".*")
		case strings.ContainsAny(seg, "{}*"):
			return nil, fmt.Errorf("%w %q: segment %q mixes text and operators", errTemplate, s, seg)
		default:
			b.WriteString(regexp.QuoteMeta(seg))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Matches reports whether v matches.
func (m *StringMatch) Matches(v string) bool {
	switch m.Type {
	case Exact:
		return v == m.Value
	case Prefix:
		return strings.HasPrefix(v, m.Value)
	case Suffix:
		return strings.HasSuffix(v, m.Value)
	case Presence:
		return v != ""
	case Template:
		re := m.re
		if re == nil { // built directly, not by ParsePath or NewSet
			var err error
			if re, err = compileTemplate(m.Value); err != nil {
				return false
			}
		}
		return re.MatchString(v)
	}
	return false
}

// matchesFold is Matches ignoring ASCII case (hosts).
func (m *StringMatch) matchesFold(v string) bool {
	lower := *m
	lower.Value = strings.ToLower(m.Value)
	return lower.Matches(strings.ToLower(v))
}

// Validate checks p: its action and path templates.
func (p *Policy) Validate() error {
	if p.Action > Audit {
		return fmt.Errorf("unsupported action %d", p.Action)
	}
	_, err := p.compiled()
	return err
}

// compiled returns a deep copy of p with its path templates compiled, so
// a Set never shares (or writes) the caller's slices.
func (p *Policy) compiled() (*Policy, error) {
	out := *p
	out.Rules = make([]Rule, len(p.Rules))
	for ri, r := range p.Rules {
		out.Rules[ri].Clauses = make([]Clause, len(r.Clauses))
		for ci, c := range r.Clauses {
			ms := slices.Clone(c.Matches)
			for mi := range ms {
				m := &ms[mi]
				for _, list := range []*[]StringMatch{&m.Paths, &m.NotPaths} {
					*list = slices.Clone(*list)
					for i := range *list {
						sm := &(*list)[i]
						if sm.Type != Template {
							continue
						}
						re, err := compileTemplate(sm.Value)
						if err != nil {
							return nil, fmt.Errorf("rule %d: %w", ri, err)
						}
						sm.re = re
					}
				}
			}
			out.Rules[ri].Clauses[ci].Matches = ms
		}
	}
	return &out, nil
}
