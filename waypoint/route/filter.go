package route

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Apply modifies h: set, then add, then remove.
func (m *HeaderModifier) Apply(h http.Header) {
	for _, s := range m.Set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range m.Add {
		h.Add(a.Name, a.Value)
	}
	for _, r := range m.Remove {
		h.Del(r)
	}
}

// Empty reports whether m changes nothing.
func (m *HeaderModifier) Empty() bool {
	return len(m.Set) == 0 && len(m.Add) == 0 && len(m.Remove) == 0
}

// Location returns the redirect target and status for a request with the
// given scheme, authority and normalized path (plus raw query), matched by
// match.
func (r *Redirect) Location(scheme, authority, path, rawQuery string, match *Match) (string, int) {
	status := r.StatusCode
	if status == 0 {
		status = http.StatusFound
	}
	host, port := splitHostPort(authority)
	if r.Scheme != "" && r.Scheme != scheme {
		scheme = r.Scheme
		port = "" // the new scheme's default port, unless set below
	}
	if r.Hostname != "" {
		host = r.Hostname
	}
	if r.Port != 0 {
		port = strconv.Itoa(int(r.Port))
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		port = ""
	}
	u := url.URL{Scheme: scheme, Host: host, RawQuery: rawQuery}
	if port != "" {
		u.Host = joinHostPort(host, port)
	}
	u.Path = r.Path.apply(path, match)
	u.RawPath = u.Path // already escaped: keep it as it is
	return u.String(), status
}

// RewritePath returns path as the rewrite changes it.
func (r *Rewrite) RewritePath(path string, match *Match) string {
	return r.Path.apply(path, match)
}

// apply changes an (escaped, normalized) path.
func (p PathModifier) apply(path string, match *Match) string {
	switch p.Type {
	case PathReplaceFull:
		return p.Value
	case PathReplacePrefix:
		if match == nil || match.Path.Type != PathPrefix {
			return path
		}
		return replacePrefix(path, match.Path.Value, p.Value)
	}
	return path
}

// replacePrefix replaces the element-wise prefix of path with repl, as
// Gateway API specifies: /foo/bar with prefix /foo and replacement /baz is
// /baz/bar; with replacement / it is /bar, never //bar.
func replacePrefix(path, prefix, repl string) string {
	rest := path
	if prefix != "/" {
		rest = path[min(len(prefix), len(path)):]
	}
	repl = strings.TrimRight(repl, "/")
	switch {
	case rest == "" && repl == "":
		return "/"
	case rest == "":
		return repl
	case !strings.HasPrefix(rest, "/"):
		return repl + "/" + rest
	}
	return repl + rest
}

func splitHostPort(authority string) (host, port string) {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 || strings.Contains(authority[i:], "]") {
		return strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]"), ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(authority[:i], "["), "]"), authority[i+1:]
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}
