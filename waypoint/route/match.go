package route

import (
	"net/http"
	"net/url"
	"strings"
)

// Request is what matching looks at. The proxy builds it once per request
// (with Path normalized by [NormalizePath]) and hands the same values to
// authorization, so routing and policy see one path.
type Request struct {
	// Host is the request authority, possibly with a port.
	Host   string
	Method string
	// Path is the normalized path, without the query.
	Path   string
	Header http.Header
	Query  url.Values
}

// Select returns the rule req takes: among the routes whose hostnames
// match, the one with the most specific hostname wins, then the first
// match in precedence order. ok is false when nothing matches (the proxy
// answers 404).
func (t *Table) Select(req *Request) (sel Selected, ok bool) {
	if t == nil {
		return Selected{}, false
	}
	if !t.anyHostnames {
		for i := range t.entries {
			if e := &t.entries[i]; e.matches(req) {
				return e.selected(), true
			}
		}
		return Selected{}, false
	}
	host := hostOnly(req.Host)
	best, bestScore := -1, -1
	for i := range t.entries {
		e := &t.entries[i]
		score := hostnameScore(e.route.Hostnames, host)
		if score <= bestScore || !e.matches(req) {
			continue
		}
		best, bestScore = i, score
	}
	if best < 0 {
		return Selected{}, false
	}
	return t.entries[best].selected(), true
}

// Len returns the number of matches in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

func (e *entry) selected() Selected {
	return Selected{Route: e.route, Rule: e.rule, Match: &e.match}
}

func (e *entry) matches(req *Request) bool {
	m := &e.match
	switch m.Path.Type {
	case PathExact:
		if req.Path != m.Path.Value {
			return false
		}
	case PathPrefix:
		if !prefixMatch(m.Path.Value, req.Path) {
			return false
		}
	case PathRegex:
		if !e.re.MatchString(req.Path) {
			return false
		}
	}
	if m.Method != "" && m.Method != req.Method {
		return false
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		vs, ok := req.Header[h.Name]
		if !ok {
			return false
		}
		v := strings.Join(vs, ",")
		if h.Type == ValueRegex && !h.re.MatchString(v) || h.Type == ValueExact && v != h.Value {
			return false
		}
	}
	for i := range m.Query {
		q := &m.Query[i]
		vs, ok := req.Query[q.Name]
		if !ok || len(vs) == 0 {
			return false
		}
		if q.Type == ValueRegex && !q.re.MatchString(vs[0]) || q.Type == ValueExact && vs[0] != q.Value {
			return false
		}
	}
	return true
}

// prefixMatch is Gateway API's element-wise prefix: prefix (without
// trailing slash) matches path when path equals it or continues with "/".
func prefixMatch(prefix, path string) bool {
	if prefix == "/" {
		return strings.HasPrefix(path, "/")
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// hostnameScore ranks how specifically hostnames match host: -1 no match,
// 0 the route names no hostnames, else larger for longer matches, exact
// names above wildcards of the same length.
func hostnameScore(hostnames []string, host string) int {
	if len(hostnames) == 0 {
		return 0
	}
	best := -1
	for _, h := range hostnames {
		var s int
		switch {
		case strings.EqualFold(h, host):
			s = 2*len(h) + 2
		case strings.HasPrefix(h, "*.") && len(host) > len(h)-1 &&
			strings.EqualFold(host[len(host)-len(h)+1:], h[1:]):
			s = 2*len(h) + 1
		default:
			continue
		}
		best = max(best, s)
	}
	return best
}

// hostOnly strips a port from an authority.
func hostOnly(authority string) string {
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.Contains(authority[i:], "]") {
		authority = authority[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]")
}
