package authz

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParsePathIstioWildcards(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		want    bool
	}{
		{"/foo", "/foo", true},
		{"/foo", "/foo/", false},
		{"/foo*", "/foo", true},
		{"/foo*", "/foobar", true},
		{"/foo*", "/foo/bar", true},
		{"/foo*", "/fo", false},
		{"*/bar", "/foo/bar", true},
		{"*/bar", "/bar", true},
		{"*/bar", "/foobar", false},
		{"*bar", "/foobar", true},
		{"*", "/anything", true},
		{"*", "", false},
		{"/foo/{*}", "/foo/bar", true},
		{"/foo/{*}", "/foo/bar/baz", false},
		{"/foo/{*}", "/foo/", false},
		{"/foo/{*}/baz", "/foo/bar/baz", true},
		{"/foo/{*}/baz", "/foo/bar/qux/baz", false},
		{"/foo/{**}", "/foo/bar/baz", true},
		{"/foo/{**}", "/foo/bar", true},
		{"/foo/{**}", "/foo", false},
		{"/{*}/foo/{**}", "/a/foo/b/c", true},
		{"/{*}/foo/{**}", "/a/b/foo/c", false},
		{"/foo.bar/{*}", "/fooxbar/x", false},
	}
	for _, tt := range tests {
		m, err := ParsePath(tt.pattern)
		if err != nil {
			t.Fatalf("ParsePath(%q): %v", tt.pattern, err)
		}
		if got := m.Matches(tt.path); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
	for _, bad := range []string{"/foo/{**}/bar", "/foo{*}", "/foo/{*}x", "foo/{*}", "/{***}"} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("ParsePath(%q) accepted", bad)
		}
	}
}

var (
	sleep   = spiffeid.RequireFromString("spiffe://cluster.local/ns/foo/sa/sleep")
	other   = spiffeid.RequireFromString("spiffe://cluster.local/ns/bar/sa/other")
	httpReq = func(method, path string, hdr ...string) *Request {
		h := http.Header{}
		for i := 0; i+1 < len(hdr); i += 2 {
			h.Add(hdr[i], hdr[i+1])
		}
		return &Request{
			Peer: sleep, SourceIP: netip.MustParseAddr("10.0.0.5"),
			DestinationIP: netip.MustParseAddr("10.96.0.10"), DestinationPort: 80,
			HTTP: true, Host: "httpbin.foo.svc.cluster.local:80", Method: method, Path: path, Header: h,
		}
	}
)

func vals(ss ...string) []StringMatch {
	out := make([]StringMatch, len(ss))
	for i, s := range ss {
		out[i] = ParseValue(s)
	}
	return out
}

func paths(t *testing.T, ss ...string) []StringMatch {
	out := make([]StringMatch, len(ss))
	for i, s := range ss {
		m, err := ParsePath(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = m
	}
	return out
}

// rule builds an Istio-style rule: one from clause, one to clause.
func rule(from, to *Match) Rule {
	var r Rule
	if from != nil {
		r.Clauses = append(r.Clauses, Clause{Matches: []Match{*from}})
	}
	if to != nil {
		r.Clauses = append(r.Clauses, Clause{Matches: []Match{*to}})
	}
	return r
}

func TestEvaluate(t *testing.T) {
	getOnly := Policy{Namespace: "foo", Name: "get-only", Action: Allow, Rules: []Rule{rule(nil, &Match{Methods: vals("GET")})}}
	denyAdmin := Policy{Namespace: "foo", Name: "deny-admin", Action: Deny, Rules: []Rule{rule(nil, &Match{Paths: paths(t, "/admin*")})}}
	fromFoo := Policy{Namespace: "foo", Name: "from-foo", Action: Allow, Rules: []Rule{rule(&Match{Namespaces: vals("foo")}, nil)}}
	allowNothing := Policy{Namespace: "foo", Name: "allow-nothing", Action: Allow}
	allowAll := Policy{Namespace: "foo", Name: "allow-all", Action: Allow, Rules: []Rule{{}}}
	denyNotSleep := Policy{Namespace: "foo", Name: "deny-not-sleep", Action: Deny,
		Rules: []Rule{rule(&Match{NotPrincipals: vals("cluster.local/ns/foo/sa/sleep")}, nil)}}
	headerCond := Policy{Namespace: "foo", Name: "header", Action: Allow, Rules: []Rule{{Clauses: []Clause{
		{Matches: []Match{{Methods: vals("GET", "HEAD")}}},
		{Matches: []Match{{Headers: []HeaderMatch{{Name: "x-token", Values: vals("ok-*")}}}}},
	}}}}
	hostPort := Policy{Namespace: "foo", Name: "host", Action: Allow, Rules: []Rule{rule(nil, &Match{
		Hosts: vals("HTTPBIN.foo.svc.cluster.local"), Ports: []uint16{80}, NotPaths: paths(t, "/private/{**}"),
	})}}
	jwtOnly := Policy{Namespace: "foo", Name: "jwt", Action: Allow, Rules: []Rule{rule(&Match{RequestPrincipals: vals("*")}, nil)}}
	dryDeny := Policy{Namespace: "foo", Name: "dry", Action: Deny, DryRun: true, Rules: []Rule{{}}}

	tests := []struct {
		name     string
		policies []Policy
		req      *Request
		allow    bool
		policy   string
	}{
		{"no policies allow", nil, httpReq("POST", "/"), true, ""},
		{"GET-only allows GET", []Policy{getOnly}, httpReq("GET", "/"), true, "foo/get-only"},
		{"GET-only denies POST", []Policy{getOnly}, httpReq("POST", "/"), false, ""},
		{"deny wins over allow", []Policy{getOnly, denyAdmin}, httpReq("GET", "/admin/x"), false, "foo/deny-admin"},
		{"only deny policies: rest allowed", []Policy{denyAdmin}, httpReq("POST", "/x"), true, ""},
		{"namespace from identity", []Policy{fromFoo}, httpReq("GET", "/"), true, "foo/from-foo"},
		{"other namespace denied", []Policy{fromFoo}, withPeer(httpReq("GET", "/"), other), false, ""},
		{"unauthenticated has no namespace", []Policy{fromFoo}, withPeer(httpReq("GET", "/"), spiffeid.ID{}), false, ""},
		{"allow nothing", []Policy{allowNothing}, httpReq("GET", "/"), false, ""},
		{"allow all", []Policy{allowAll, allowNothing}, httpReq("GET", "/"), true, "foo/allow-all"},
		{"notPrincipals denies others", []Policy{denyNotSleep}, withPeer(httpReq("GET", "/"), other), false, "foo/deny-not-sleep"},
		{"notPrincipals spares sleep", []Policy{denyNotSleep}, httpReq("GET", "/"), true, ""},
		{"when header ok", []Policy{headerCond}, httpReq("HEAD", "/", "X-Token", "ok-1"), true, "foo/header"},
		{"when header bad", []Policy{headerCond}, httpReq("GET", "/", "X-Token", "no"), false, ""},
		{"when header missing", []Policy{headerCond}, httpReq("GET", "/"), false, ""},
		{"host case-insensitive, port optional", []Policy{hostPort}, httpReq("GET", "/public"), true, "foo/host"},
		{"notPaths template", []Policy{hostPort}, httpReq("GET", "/private/a/b"), false, ""},
		{"no JWT: requestPrincipals never match", []Policy{jwtOnly}, httpReq("GET", "/"), false, ""},
		{"dry-run deny not enforced", []Policy{dryDeny}, httpReq("GET", "/"), true, ""},
		{"TCP: ALLOW with L7 fields never matches", []Policy{getOnly}, tcp(httpReq("", "")), false, ""},
		{"TCP: DENY ignores its L7 fields", []Policy{denyAdmin}, tcp(httpReq("", "")), false, "foo/deny-admin"},
		{"TCP: L4 ALLOW applies", []Policy{fromFoo}, tcp(httpReq("", "")), true, "foo/from-foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := NewSet(tt.policies)
			if err != nil {
				t.Fatal(err)
			}
			d := set.Evaluate(tt.req)
			if d.Allow != tt.allow || d.Policy != tt.policy {
				t.Errorf("Evaluate = allow %v by %q, want allow %v by %q", d.Allow, d.Policy, tt.allow, tt.policy)
			}
		})
	}
}

func TestEvaluateReportsDryRun(t *testing.T) {
	set, err := NewSet([]Policy{{Namespace: "ns", Name: "audit", Action: Audit, Rules: []Rule{{}}}})
	if err != nil {
		t.Fatal(err)
	}
	d := set.Evaluate(httpReq("GET", "/"))
	if !d.Allow || len(d.DryRun) != 1 || d.DryRun[0] != "ns/audit" {
		t.Errorf("Evaluate = %+v, want allowed with ns/audit reported", d)
	}
}

func TestEvaluateIPs(t *testing.T) {
	p := Policy{Namespace: "ns", Name: "ips", Action: Allow, Rules: []Rule{rule(
		&Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}},
		&Match{RemoteIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, NotDestinationIPs: []netip.Prefix{netip.MustParsePrefix("10.96.0.11/32")}},
	)}}
	set, err := NewSet([]Policy{p})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		req   *Request
		allow bool
	}{
		{"xff in range", httpReq("GET", "/", "X-Forwarded-For", "192.0.2.7, 10.0.0.1"), true},
		{"xff out of range", httpReq("GET", "/", "X-Forwarded-For", "198.51.100.1"), false},
		{"no xff: source ip counts", httpReq("GET", "/"), false},
		{"source out of range", withSource(httpReq("GET", "/", "X-Forwarded-For", "192.0.2.7"), "10.1.0.1"), false},
	} {
		if d := set.Evaluate(tt.req); d.Allow != tt.allow {
			t.Errorf("%s: allow = %v, want %v", tt.name, d.Allow, tt.allow)
		}
	}
}

func TestNewSetRefusesBadTemplate(t *testing.T) {
	p := Policy{Namespace: "ns", Name: "bad", Rules: []Rule{rule(nil, &Match{Paths: []StringMatch{{Type: Template, Value: "/a/{**}/b"}}})}}
	if _, err := NewSet([]Policy{p}); err == nil {
		t.Fatal("NewSet accepted an invalid template")
	}
}

func TestNilSetAllows(t *testing.T) {
	if d := (*Set)(nil).Evaluate(httpReq("GET", "/")); !d.Allow {
		t.Fatal("nil set denied")
	}
}

func withPeer(r *Request, id spiffeid.ID) *Request { r.Peer = id; return r }
func tcp(r *Request) *Request                      { r.HTTP = false; return r }
func withSource(r *Request, ip string) *Request {
	r.SourceIP = netip.MustParseAddr(ip)
	return r
}
