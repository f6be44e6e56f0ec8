package route

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// Table is the compiled set of routes of one destination. It is immutable
// and safe for concurrent use.
type Table struct {
	entries      []entry // in precedence order
	anyHostnames bool    // some route restricts hostnames
}

// entry is one match of one rule, the unit Gateway API precedence orders.
type entry struct {
	route *Route
	rule  *Rule
	match Match
	re    *regexp.Regexp // compiled PathRegex
}

// Selected is the outcome of a successful Select.
type Selected struct {
	Route *Route
	Rule  *Rule
	// Match is the match that selected the rule; rewrites of the matched
	// prefix need it.
	Match *Match
}

// Compile validates routes and orders their matches by Gateway API
// precedence. Invalid routes are left out of the table; the returned error
// joins one error per such route, naming it, for its status.
func Compile(routes []Route) (*Table, error) {
	valid := make([]*Route, 0, len(routes))
	var errs []error
	for i := range routes {
		r := &routes[i]
		if err := Validate(r); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", r.Kind, r.Key(), err))
			continue
		}
		valid = append(valid, r)
	}
	// Route order for ties: oldest first, then by namespace/name.
	slices.SortStableFunc(valid, func(a, b *Route) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Key(), b.Key())
	})
	t := &Table{}
	for _, r := range valid {
		t.anyHostnames = t.anyHostnames || len(r.Hostnames) > 0
		for ri := range r.Rules {
			rule := &r.Rules[ri]
			matches := rule.Matches
			if len(matches) == 0 {
				matches = []Match{{Path: PathMatch{Type: PathPrefix, Value: "/"}}}
			}
			for _, m := range matches {
				e := entry{route: r, rule: rule, match: normalizeMatch(m)}
				if m.Path.Type == PathRegex {
					e.re = regexp.MustCompile(anchored(m.Path.Value)) // validated
				}
				t.entries = append(t.entries, e)
			}
		}
	}
	slices.SortStableFunc(t.entries, func(a, b entry) int { return comparePrecedence(&a.match, &b.match) })
	return t, errors.Join(errs...)
}

// comparePrecedence orders matches as Gateway API asks (and as Istio does):
// exact path, then prefix, then regex, each longer value first; then a
// method match; then more header matches; then more query matches. The
// stable sort keeps route and rule order for ties.
func comparePrecedence(a, b *Match) int {
	if a.Path.Type != b.Path.Type {
		return cmp.Compare(b.Path.Type, a.Path.Type)
	}
	if la, lb := len(a.Path.Value), len(b.Path.Value); la != lb {
		return cmp.Compare(lb, la)
	}
	if (a.Method == "") != (b.Method == "") {
		if a.Method != "" {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(len(b.Headers), len(a.Headers)); c != 0 {
		return c
	}
	return cmp.Compare(len(b.Query), len(a.Query))
}

// normalizeMatch canonicalizes a validated match: prefix paths lose their
// trailing slash (/foo/ and /foo match the same), header names are
// canonical, regular expressions compiled.
func normalizeMatch(m Match) Match {
	if m.Path.Type == PathPrefix && len(m.Path.Value) > 1 {
		m.Path.Value = strings.TrimRight(m.Path.Value, "/")
		if m.Path.Value == "" {
			m.Path.Value = "/"
		}
	}
	hs := make([]HeaderMatch, len(m.Headers))
	for i, h := range m.Headers {
		h.Name = http.CanonicalHeaderKey(h.Name)
		if h.Type == ValueRegex {
			h.re = regexp.MustCompile(anchored(h.Value))
		}
		hs[i] = h
	}
	m.Headers = hs
	qs := make([]QueryMatch, len(m.Query))
	for i, q := range m.Query {
		if q.Type == ValueRegex {
			q.re = regexp.MustCompile(anchored(q.Value))
		}
		qs[i] = q
	}
	m.Query = qs
	return m
}

func anchored(re string) string { return `^(?:` + re + `)$` }

// Validate checks what the CRD schema cannot: regular expressions, filter
// combinations, weights. Compile leaves out routes it refuses.
func Validate(r *Route) error {
	if r.Name == "" {
		return errors.New("route has no name")
	}
	for ri := range r.Rules {
		if err := validateRule(&r.Rules[ri]); err != nil {
			return fmt.Errorf("rule %d: %w", ri, err)
		}
	}
	return nil
}

func validateRule(rule *Rule) error {
	f := &rule.Filters
	if f.Redirect != nil && f.Rewrite != nil {
		return errors.New("redirect and URL rewrite cannot be combined")
	}
	hasPrefixReplace := false
	if f.Redirect != nil {
		if err := validateRedirect(f.Redirect); err != nil {
			return err
		}
		hasPrefixReplace = f.Redirect.Path.Type == PathReplacePrefix
	}
	if f.Rewrite != nil {
		hasPrefixReplace = f.Rewrite.Path.Type == PathReplacePrefix
	}
	if err := validateModifier(&f.RequestHeaders); err != nil {
		return fmt.Errorf("request header modifier: %w", err)
	}
	if err := validateModifier(&f.ResponseHeaders); err != nil {
		return fmt.Errorf("response header modifier: %w", err)
	}
	for _, m := range f.Mirrors {
		if m.Percent < 0 || m.Percent > 100 {
			return fmt.Errorf("mirror percent %v not in [0, 100]", m.Percent)
		}
		if m.Backend.Name == "" {
			return errors.New("mirror has no service name")
		}
	}
	if rule.Filters.Redirect != nil && len(rule.Backends) > 0 {
		return errors.New("a rule with a redirect cannot have backends")
	}
	for i, m := range rule.Matches {
		if err := validateMatch(&m); err != nil {
			return fmt.Errorf("match %d: %w", i, err)
		}
		if hasPrefixReplace && m.Path.Type != PathPrefix {
			return fmt.Errorf("match %d: ReplacePrefixMatch needs a PathPrefix match", i)
		}
	}
	for i, b := range rule.Backends {
		switch {
		case b.Weight < 0:
			return fmt.Errorf("backend %d: negative weight %d", i, b.Weight)
		case b.Name == "":
			return fmt.Errorf("backend %d: no service name", i)
		case b.Filters.Redirect != nil || b.Filters.Rewrite != nil || len(b.Filters.Mirrors) > 0:
			return fmt.Errorf("backend %d: only header modifiers are allowed on a backend", i)
		}
	}
	if err := validateRetry(rule.Retry); err != nil {
		return err
	}
	if rule.Timeouts.Request < 0 || rule.Timeouts.BackendRequest < 0 {
		return errors.New("negative timeout")
	}
	if rule.Timeouts.Request > 0 && rule.Timeouts.BackendRequest > rule.Timeouts.Request {
		return errors.New("backendRequest timeout exceeds request timeout")
	}
	return nil
}

func validateRetry(r *Retry) error {
	switch {
	case r == nil:
		return nil
	case r.Attempts < 0 || r.Attempts > MaxRetryAttempts:
		return fmt.Errorf("retry attempts %d not in [0, %d]", r.Attempts, MaxRetryAttempts)
	case r.Backoff < 0 || r.PerTryTimeout < 0:
		return errors.New("negative retry backoff or per-try timeout")
	}
	for _, c := range r.Codes {
		if c < 100 || c > 599 {
			return fmt.Errorf("retry status code %d not in [100, 599]", c)
		}
	}
	return nil
}

func validateMatch(m *Match) error {
	switch m.Path.Type {
	case PathNone:
	case PathExact, PathPrefix:
		if !strings.HasPrefix(m.Path.Value, "/") {
			return fmt.Errorf("path %q does not start with /", m.Path.Value)
		}
	case PathRegex:
		if _, err := regexp.Compile(anchored(m.Path.Value)); err != nil {
			return fmt.Errorf("path regex: %w", err)
		}
	default:
		return fmt.Errorf("unknown path match type %d", m.Path.Type)
	}
	for _, h := range m.Headers {
		if err := validateValue(h.Type, h.Name, h.Value); err != nil {
			return fmt.Errorf("header %q: %w", h.Name, err)
		}
	}
	for _, q := range m.Query {
		if err := validateValue(q.Type, q.Name, q.Value); err != nil {
			return fmt.Errorf("query %q: %w", q.Name, err)
		}
	}
	return nil
}

func validateValue(t ValueType, name, value string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if t == ValueRegex {
		if _, err := regexp.Compile(anchored(value)); err != nil {
			return fmt.Errorf("regex: %w", err)
		}
	}
	return nil
}

func validateModifier(m *HeaderModifier) error {
	for _, h := range append(slices.Clip(m.Set), m.Add...) {
		if h.Name == "" {
			return errors.New("empty header name")
		}
	}
	return nil
}

func validateRedirect(r *Redirect) error {
	switch r.StatusCode {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return fmt.Errorf("redirect status %d", r.StatusCode)
	}
	switch r.Scheme {
	case "", "http", "https":
	default:
		return fmt.Errorf("redirect scheme %q", r.Scheme)
	}
	return nil
}
