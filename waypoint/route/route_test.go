package route

import (
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func prefix(v string) PathMatch { return PathMatch{Type: PathPrefix, Value: v} }
func exact(v string) PathMatch  { return PathMatch{Type: PathExact, Value: v} }
func regex(v string) PathMatch  { return PathMatch{Type: PathRegex, Value: v} }

// named returns a route whose rules are one per match, each rule named
// after its position so tests can tell which was selected.
func named(ns, name string, created int, matches ...Match) Route {
	r := Route{Namespace: ns, Name: name, Created: time.Unix(int64(created), 0)}
	for i, m := range matches {
		r.Rules = append(r.Rules, Rule{Name: name + "-" + string(rune('a'+i)), Matches: []Match{m}})
	}
	return r
}

func req(method, target string, headers ...string) *Request {
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Add(headers[i], headers[i+1])
	}
	return &Request{Host: "svc.ns.svc.cluster.local", Method: method, Path: u.Path, Query: u.Query(), Header: h}
}

func TestSelectPrecedence(t *testing.T) {
	routes := []Route{
		named("ns", "b-prefix", 1,
			Match{Path: prefix("/")},
			Match{Path: prefix("/api")},
			Match{Path: prefix("/api/v1")},
			Match{Path: regex("/api/v[0-9]+/items")},
			Match{Path: prefix("/api"), Method: http.MethodPost},
			Match{Path: prefix("/api"), Headers: []HeaderMatch{{Name: "x-a", Value: "1"}}},
			Match{Path: prefix("/api"), Headers: []HeaderMatch{{Name: "x-a", Value: "1"}, {Name: "X-B", Value: "2"}}},
			Match{Path: prefix("/api"), Query: []QueryMatch{{Name: "q", Value: "1"}}},
		),
		named("ns", "a-exact", 1, Match{Path: exact("/api/v1/items")}),
		// Same match as b-prefix's "/api/v1" but newer: loses the tie.
		named("ns", "c-newer", 0, Match{Path: prefix("/api/v1/x")}),
		named("ns", "d-newer", 5, Match{Path: prefix("/api/v1/x")}),
		// Same creation time as c-newer: alphabetical order decides.
		named("aa", "z-same-time", 0, Match{Path: prefix("/tie")}),
		named("bb", "a-same-time", 0, Match{Path: prefix("/tie")}),
	}
	tab, err := Compile(routes)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *Request
		want string
	}{
		{"exact beats everything", req("POST", "/api/v1/items?q=1", "x-a", "1", "x-b", "2"), "a-exact"},
		{"longer prefix beats regex", req("GET", "/api/v1/foo"), "b-prefix-c"},
		{"any prefix ranks above regex", req("GET", "/api/v2/items"), "b-prefix-b"},
		{"method beats headers", req("POST", "/api/x", "x-a", "1", "x-b", "2"), "b-prefix-e"},
		{"more headers win", req("GET", "/api/x", "x-a", "1", "x-b", "2"), "b-prefix-g"},
		{"one header", req("GET", "/api/x", "x-a", "1"), "b-prefix-f"},
		{"header value mismatch falls to query", req("GET", "/api/x?q=1", "x-a", "2"), "b-prefix-h"},
		{"plain prefix", req("GET", "/api"), "b-prefix-b"},
		{"element-wise prefix: /apix is not /api", req("GET", "/apix"), "b-prefix-a"},
		{"oldest route wins a tie", req("GET", "/api/v1/x/y"), "c-newer-a"},
		{"namespace/name order breaks a time tie", req("GET", "/tie"), "z-same-time-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, ok := tab.Select(tt.req)
			if !ok {
				t.Fatalf("no match, want %s", tt.want)
			}
			if sel.Rule.Name != tt.want && sel.Route.Name != tt.want {
				t.Errorf("selected %s rule %s, want %s", sel.Route.Key(), sel.Rule.Name, tt.want)
			}
		})
	}
}

func TestSelectRegexBelowPrefix(t *testing.T) {
	// Istio ranks Exact > Prefix > Regex regardless of length.
	tab, err := Compile([]Route{named("ns", "r", 0,
		Match{Path: regex("/api/.*")},
		Match{Path: prefix("/api")},
	)})
	if err != nil {
		t.Fatal(err)
	}
	sel, ok := tab.Select(req("GET", "/api/x"))
	if !ok || sel.Rule.Name != "r-b" {
		t.Fatalf("selected %+v, want prefix rule r-b", sel.Rule)
	}
}

func TestSelectFirstRuleWinsWithinRoute(t *testing.T) {
	tab, err := Compile([]Route{named("ns", "r", 0, Match{Path: prefix("/x")}, Match{Path: prefix("/x")})})
	if err != nil {
		t.Fatal(err)
	}
	if sel, _ := tab.Select(req("GET", "/x")); sel.Rule.Name != "r-a" {
		t.Fatalf("selected %s, want r-a", sel.Rule.Name)
	}
}

func TestSelectMatchConditions(t *testing.T) {
	tests := []struct {
		name  string
		match Match
		req   *Request
		want  bool
	}{
		{"no rule matches means /", Match{}, req("GET", "/anything"), true},
		{"exact", Match{Path: exact("/a")}, req("GET", "/a"), true},
		{"exact is exact", Match{Path: exact("/a")}, req("GET", "/a/"), false},
		{"prefix trailing slash ignored", Match{Path: prefix("/a/")}, req("GET", "/a"), true},
		{"prefix child", Match{Path: prefix("/a")}, req("GET", "/a/b"), true},
		{"prefix not partial segment", Match{Path: prefix("/a")}, req("GET", "/ab"), false},
		{"prefix is case sensitive", Match{Path: prefix("/A")}, req("GET", "/a"), false},
		{"regex anchored", Match{Path: regex("/a[0-9]")}, req("GET", "/a1/x"), false},
		{"regex", Match{Path: regex("/a[0-9]/.*")}, req("GET", "/a1/x"), true},
		{"method", Match{Method: "PUT"}, req("GET", "/"), false},
		{"header name case insensitive", Match{Headers: []HeaderMatch{{Name: "X-Env", Value: "canary"}}}, req("GET", "/", "x-env", "canary"), true},
		{"header value case sensitive", Match{Headers: []HeaderMatch{{Name: "x-env", Value: "canary"}}}, req("GET", "/", "x-env", "Canary"), false},
		{"header missing", Match{Headers: []HeaderMatch{{Name: "x-env", Value: ""}}}, req("GET", "/"), false},
		{"header regex", Match{Headers: []HeaderMatch{{Type: ValueRegex, Name: "x-v", Value: "v[12]"}}}, req("GET", "/", "x-v", "v2"), true},
		{"repeated header joined", Match{Headers: []HeaderMatch{{Name: "x-v", Value: "a,b"}}}, req("GET", "/", "x-v", "a", "x-v", "b"), true},
		{"query exact", Match{Query: []QueryMatch{{Name: "v", Value: "2"}}}, req("GET", "/?v=2"), true},
		{"query first value counts", Match{Query: []QueryMatch{{Name: "v", Value: "2"}}}, req("GET", "/?v=1&v=2"), false},
		{"query name case sensitive", Match{Query: []QueryMatch{{Name: "V", Value: "2"}}}, req("GET", "/?v=2"), false},
		{"query regex", Match{Query: []QueryMatch{{Type: ValueRegex, Name: "v", Value: "[0-9]+"}}}, req("GET", "/?v=42"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Route{Namespace: "ns", Name: "r", Rules: []Rule{{Matches: []Match{tt.match}}}}
			if tt.match.Path.Type == PathNone && tt.match.Method == "" && tt.match.Headers == nil && tt.match.Query == nil {
				r.Rules[0].Matches = nil
			}
			tab, err := Compile([]Route{r})
			if err != nil {
				t.Fatal(err)
			}
			if _, got := tab.Select(tt.req); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSelectHostnames(t *testing.T) {
	routes := []Route{
		{Namespace: "ns", Name: "any", Rules: []Rule{{Name: "any"}}},
		{Namespace: "ns", Name: "wild", Hostnames: []string{"*.example.com"}, Rules: []Rule{{Name: "wild"}}},
		{Namespace: "ns", Name: "exact", Hostnames: []string{"api.example.com"}, Rules: []Rule{{Name: "exact"}}},
	}
	tab, err := Compile(routes)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"api.example.com:8080": "exact",
		"API.example.com":      "exact",
		"www.example.com":      "wild",
		"example.com":          "any",
		"other":                "any",
	} {
		r := req("GET", "/")
		r.Host = host
		if sel, _ := tab.Select(r); sel.Rule.Name != want {
			t.Errorf("host %s: selected %s, want %s", host, sel.Rule.Name, want)
		}
	}
}

func TestCompileDropsInvalidRoutesOnly(t *testing.T) {
	routes := []Route{
		{Namespace: "ns", Name: "bad-regex", Rules: []Rule{{Matches: []Match{{Path: regex("(")}}}}},
		{Namespace: "ns", Name: "bad-path", Rules: []Rule{{Matches: []Match{{Path: exact("nope")}}}}},
		{Namespace: "ns", Name: "bad-both", Rules: []Rule{{Filters: Filters{Redirect: &Redirect{}, Rewrite: &Rewrite{}}}}},
		{Namespace: "ns", Name: "bad-prefix-replace", Rules: []Rule{{Matches: []Match{{Path: exact("/a")}},
			Filters: Filters{Rewrite: &Rewrite{Path: PathModifier{Type: PathReplacePrefix, Value: "/b"}}}}}},
		{Namespace: "ns", Name: "bad-weight", Rules: []Rule{{Backends: []Backend{{Name: "s", Weight: -1}}}}},
		{Namespace: "ns", Name: "bad-status", Rules: []Rule{{Filters: Filters{Redirect: &Redirect{StatusCode: 200}}}}},
		{Namespace: "ns", Name: "bad-retry-attempts", Rules: []Rule{{Retry: &Retry{Attempts: MaxRetryAttempts + 1}}}},
		{Namespace: "ns", Name: "bad-retry-code", Rules: []Rule{{Retry: GatewayRetry(1, []int{503, 99}, 0)}}},
		{Namespace: "ns", Name: "bad-retry-backoff", Rules: []Rule{{Retry: GatewayRetry(1, nil, -time.Second)}}},
		{Namespace: "ns", Name: "good", Rules: []Rule{{Matches: []Match{{Path: prefix("/")}}}}},
	}
	tab, err := Compile(routes)
	if err == nil {
		t.Fatal("want errors for invalid routes")
	}
	for _, name := range []string{"bad-regex", "bad-path", "bad-both", "bad-prefix-replace", "bad-weight", "bad-status",
		"bad-retry-attempts", "bad-retry-code", "bad-retry-backoff"} {
		if !strings.Contains(err.Error(), "ns/"+name+":") {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	if sel, ok := tab.Select(req("GET", "/x")); !ok || sel.Route.Name != "good" {
		t.Errorf("the valid route is not served: %+v %v", sel, ok)
	}
}

func TestPickBackendWeightedSplit(t *testing.T) {
	// 90/10 over 100,000 picks with a fixed seed: the share of each backend
	// must lie within 4 standard deviations of its weight.
	rule := Rule{Backends: []Backend{{Name: "v1", Weight: 90}, {Name: "v2", Weight: 10}, {Name: "off", Weight: 0}}}
	rnd := rand.New(rand.NewPCG(1, 2))
	const n = 100_000
	counts := map[string]int{}
	for range n {
		b, ok := rule.PickBackend(rnd)
		if !ok {
			t.Fatal("no backend")
		}
		counts[b.Name]++
	}
	if counts["off"] != 0 {
		t.Errorf("zero-weight backend chosen %d times", counts["off"])
	}
	for name, p := range map[string]float64{"v1": 0.9, "v2": 0.1} {
		sd := math.Sqrt(n * p * (1 - p))
		if d := math.Abs(float64(counts[name]) - n*p); d > 4*sd {
			t.Errorf("%s chosen %d times, want %.0f ± %.0f", name, counts[name], n*p, 4*sd)
		}
	}
}

func TestPickBackendNone(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, r := range []Rule{{}, {Backends: []Backend{{Name: "a"}, {Name: "b"}}}} {
		if _, ok := r.PickBackend(rnd); ok {
			t.Errorf("%+v: picked a backend", r.Backends)
		}
	}
}

func TestRetriable(t *testing.T) {
	tests := []struct {
		name           string
		on             RetryOn
		codes          []int
		status         int
		connect, reset bool
		want           bool
	}{
		{"connect failure", RetryConnectFailure, nil, 0, true, false, true},
		{"connect failure under 5xx", Retry5xx, nil, 0, true, false, true},
		{"connect failure not asked", RetryReset, nil, 0, true, false, false},
		{"reset under gateway-error", RetryGatewayError, nil, 0, false, true, true},
		{"reset not asked", RetryConnectFailure, nil, 0, false, true, false},
		{"reset", RetryReset, nil, 0, false, true, true},
		{"5xx", Retry5xx, nil, 500, false, false, true},
		{"5xx not 4xx", Retry5xx, nil, 404, false, false, false},
		{"gateway error 503", RetryGatewayError, nil, 503, false, false, true},
		{"gateway error not 500", RetryGatewayError, nil, 500, false, false, false},
		{"status codes", RetryStatusCodes, []int{409}, 409, false, false, true},
		{"status codes other", RetryStatusCodes, []int{409}, 500, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Retry{Attempts: 1, On: tt.on, Codes: tt.codes}
			if got := p.Retriable(tt.status, tt.connect, tt.reset); got != tt.want {
				t.Errorf("Retriable = %v, want %v", got, tt.want)
			}
		})
	}
	if (*Retry)(nil).Retriable(503, true, false) {
		t.Error("nil policy retries")
	}
}

// TestGatewayRetryRetriesFailuresAndListedCodes: an HTTPRoute retry stanza
// retries connection failures, resets and its codes, nothing else.
func TestGatewayRetryRetriesFailuresAndListedCodes(t *testing.T) {
	p := GatewayRetry(3, []int{500, 429}, 100*time.Millisecond)
	for _, tt := range []struct {
		status         int
		connect, reset bool
		want           bool
	}{
		{0, true, false, true},
		{0, false, true, true},
		{500, false, false, true},
		{429, false, false, true},
		{503, false, false, false}, // not listed: unlike the default policy
		{502, false, false, false},
		{200, false, false, false},
	} {
		if got := p.Retriable(tt.status, tt.connect, tt.reset); got != tt.want {
			t.Errorf("status %d connect %v reset %v: retriable %v, want %v", tt.status, tt.connect, tt.reset, got, tt.want)
		}
	}
	if p.Attempts != 3 || p.Backoff != 100*time.Millisecond {
		t.Errorf("policy %+v", p)
	}
}

func TestGRPCMethod(t *testing.T) {
	tests := []struct {
		service, method string
		regex           bool
		path            string
		want            bool
	}{
		{"pkg.Echo", "Say", false, "/pkg.Echo/Say", true},
		{"pkg.Echo", "Say", false, "/pkg.Echo/SayMore", false},
		{"pkg.Echo", "", false, "/pkg.Echo/Anything", true},
		{"pkg.Echo", "", false, "/pkg.EchoX/Say", false},
		{"", "Say", false, "/any.Svc/Say", true},
		{"", "Say", false, "/any.Svc/Sa", false},
		{`pkg\..*`, "S.*", true, "/pkg.Echo/Say", true},
		{`pkg\..*`, "", true, "/other/Say", false},
	}
	for _, tt := range tests {
		r := Route{Kind: KindGRPC, Namespace: "ns", Name: "g", Rules: []Rule{{Matches: []Match{{Path: GRPCMethod(tt.service, tt.method, tt.regex)}}}}}
		tab, err := Compile([]Route{r})
		if err != nil {
			t.Fatal(err)
		}
		if _, got := tab.Select(req("POST", tt.path)); got != tt.want {
			t.Errorf("%s/%s regex=%v on %s: match %v, want %v", tt.service, tt.method, tt.regex, tt.path, got, tt.want)
		}
	}
}
