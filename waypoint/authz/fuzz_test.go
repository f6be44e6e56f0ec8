package authz

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzEvaluate evaluates policies using every field against untrusted
// requests: no panics, and DENY-everything always denies.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte("GET /admin/x HTTP/1.1\r\nHost: a:80\r\nX-Token: ok-1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"))
	f.Add([]byte("POST /private/{**} HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"))
	policies := []Policy{
		{Namespace: "ns", Name: "allow", Rules: []Rule{{Clauses: []Clause{{Matches: []Match{{
			Hosts: vals("*.example.com", "a"), Methods: vals("GET"), NotPaths: []StringMatch{{Type: Template, Value: "/private/{**}"}},
			Headers: []HeaderMatch{{Name: "x-token", Values: vals("ok-*")}}, Paths: vals("*"),
		}}}}}}},
		{Namespace: "ns", Name: "deny", Action: Deny, Rules: []Rule{{Clauses: []Clause{{Matches: []Match{{Paths: vals("/admin*")}}}}}}},
	}
	set, err := NewSet(policies)
	if err != nil {
		f.Fatal(err)
	}
	denyAll, err := NewSet([]Policy{{Namespace: "ns", Name: "all", Action: Deny, Rules: []Rule{{}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		r := &Request{HTTP: true, Peer: sleep, Host: hr.Host, Method: hr.Method, Path: hr.URL.Path, Header: hr.Header}
		d := set.Evaluate(r)
		if d.Allow && len(hr.URL.Path) >= 6 && hr.URL.Path[:6] == "/admin" {
			t.Fatalf("DENY /admin* allowed %q", hr.URL.Path)
		}
		if denyAll.Evaluate(r).Allow {
			t.Fatal("deny-all allowed a request")
		}
	})
}
