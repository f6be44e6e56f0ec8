package route

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// FuzzSelect feeds untrusted HTTP requests through normalization and a
// table exercising every match type: nothing may panic, normalized paths
// must be stable, and a match must really match.
func FuzzSelect(f *testing.F) {
	for _, s := range []string{
		"GET /api/v1/items?q=1 HTTP/1.1\r\nHost: a.example.com\r\nX-A: 1\r\n\r\n",
		"POST /pkg.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\n\r\n",
		"GET /a/%2e%2e/b/%2F/../c HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET /api/v9/items HTTP/1.1\r\nHost: b.example.com:80\r\nX-V: v2\r\nX-V: v3\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	tab, err := Compile([]Route{
		{Namespace: "ns", Name: "a", Hostnames: []string{"*.example.com"}, Rules: []Rule{
			{Matches: []Match{{Path: exact("/api/v1/items")}, {Path: regex("/api/v[0-9]+/items"), Method: "GET"}}},
			{Matches: []Match{{Path: prefix("/api"), Headers: []HeaderMatch{{Type: ValueRegex, Name: "x-v", Value: "v[0-9],.*"}}}}},
		}},
		{Namespace: "ns", Name: "b", Rules: []Rule{
			{Matches: []Match{{Path: GRPCMethod("pkg.Echo", "", false), Query: []QueryMatch{{Name: "q", Value: "1"}}}}},
			{Matches: []Match{{Path: prefix("/")}}},
		}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		p, err := NormalizePath(hr.URL.EscapedPath())
		if err != nil {
			return
		}
		if again, err := NormalizePath(p); err != nil || again != p {
			t.Fatalf("normalization not idempotent: %q -> %q -> %q (%v)", hr.URL.EscapedPath(), p, again, err)
		}
		if strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
			t.Fatalf("dot segment survived: %q", p)
		}
		r := &Request{Host: hr.Host, Method: hr.Method, Path: p, Header: hr.Header, Query: hr.URL.Query()}
		sel, ok := tab.Select(r)
		if !ok {
			t.Fatalf("catch-all route did not match %q", p)
		}
		if sel.Match.Path.Type == PathExact && sel.Match.Path.Value != p {
			t.Fatalf("exact match %q selected for %q", sel.Match.Path.Value, p)
		}
	})
}
