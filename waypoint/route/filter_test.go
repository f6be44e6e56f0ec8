package route

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderModifier(t *testing.T) {
	h := http.Header{"X-Keep": {"1"}, "X-Set": {"old", "older"}, "X-Drop": {"x"}}
	m := HeaderModifier{
		Set:    []Header{{"x-set", "new"}},
		Add:    []Header{{"x-keep", "2"}, {"x-added", "a"}},
		Remove: []string{"X-DROP"},
	}
	m.Apply(h)
	want := http.Header{"X-Keep": {"1", "2"}, "X-Set": {"new"}, "X-Added": {"a"}}
	if d := cmp.Diff(want, h); d != "" {
		t.Errorf("headers (-want +got):\n%s", d)
	}
}

func TestRedirectLocation(t *testing.T) {
	pm := &Match{Path: prefix("/old")}
	tests := []struct {
		name       string
		r          Redirect
		authority  string
		path       string
		query      string
		wantLoc    string
		wantStatus int
	}{
		{"defaults", Redirect{}, "svc:8080", "/a", "", "http://svc:8080/a", 302},
		{"https drops port", Redirect{Scheme: "https", StatusCode: 301}, "svc:8080", "/a", "q=1", "https://svc/a?q=1", 301},
		{"hostname and port", Redirect{Hostname: "other", Port: 9090}, "svc", "/a", "", "http://other:9090/a", 302},
		{"default port elided", Redirect{Port: 80}, "svc:8080", "/a", "", "http://svc/a", 302},
		{"full path", Redirect{Path: PathModifier{Type: PathReplaceFull, Value: "/new"}}, "svc", "/old/x", "", "http://svc/new", 302},
		{"prefix", Redirect{Path: PathModifier{Type: PathReplacePrefix, Value: "/new"}}, "svc", "/old/x", "", "http://svc/new/x", 302},
		{"ipv6", Redirect{Port: 81}, "[fd00::1]:80", "/", "", "http://[fd00::1]:81/", 302},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, st := tt.r.Location("http", tt.authority, tt.path, tt.query, pm)
			if loc != tt.wantLoc || st != tt.wantStatus {
				t.Errorf("Location = %s %d, want %s %d", loc, st, tt.wantLoc, tt.wantStatus)
			}
		})
	}
}

func TestReplacePrefix(t *testing.T) {
	tests := []struct{ path, prefix, repl, want string }{
		{"/foo/bar", "/foo", "/baz", "/baz/bar"},
		{"/foo", "/foo", "/baz", "/baz"},
		{"/foo/bar", "/foo", "/", "/bar"},
		{"/foo", "/foo", "/", "/"},
		{"/foo/", "/foo", "/baz", "/baz/"},
		{"/foo/bar", "/", "/baz", "/baz/foo/bar"},
		{"/foo/bar", "/foo", "/baz/", "/baz/bar"},
	}
	for _, tt := range tests {
		if got := replacePrefix(tt.path, tt.prefix, tt.repl); got != tt.want {
			t.Errorf("replacePrefix(%q, %q, %q) = %q, want %q", tt.path, tt.prefix, tt.repl, got, tt.want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/../../b", "/b"},
		{"/a/b/..", "/a/"},
		{"/a/%2e%2E/b", "/b"},
		{"/%61%7e", "/a~"},
		{"/a%2fb", "/a%2Fb"},
		{"/a//b", "/a//b"},
		{"/a%20b", "/a%20b"},
	}
	for _, tt := range tests {
		got, err := NormalizePath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"a", "/%zz", "/%1", "/a b", "/a\x00", "*"} {
		if _, err := NormalizePath(bad); !errors.Is(err, ErrBadPath) {
			t.Errorf("NormalizePath(%q) err = %v, want ErrBadPath", bad, err)
		}
	}
}
