package authz

import (
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/api/workload"
)

func exactM(s string) *workload.StringMatch {
	return &workload.StringMatch{MatchType: &workload.StringMatch_Exact{Exact: s}}
}

var presenceM = &workload.StringMatch{MatchType: &workload.StringMatch_Presence{Presence: true}}

func prefixOf(s string) *workload.IPPrefix {
	p := netip.MustParsePrefix(s)
	return &workload.IPPrefix{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

func policy(t *testing.T, action workload.Action, matches ...*workload.Match) *Policy {
	t.Helper()
	p, err := Decode(&workload.Authorization{
		Name: "p", Namespace: "ns", Scope: workload.Scope_WORKLOAD_SELECTOR, Action: action,
		Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: matches}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func conn(peer string, src string, port uint16) Conn {
	c := Conn{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("10.0.0.2"), DstPort: port}
	if peer != "" {
		c.Peer = spiffeid.RequireFromString(peer)
	}
	return c
}

const (
	idX = "spiffe://cluster.local/ns/a/sa/x"
	idY = "spiffe://cluster.local/ns/b/sa/y"
)

func TestEvaluate(t *testing.T) {
	allowX := policy(t, workload.Action_ALLOW, &workload.Match{Principals: []*workload.StringMatch{exactM("cluster.local/ns/a/sa/x")}})
	denyNSb := policy(t, workload.Action_DENY, &workload.Match{Namespaces: []*workload.StringMatch{exactM("b")}})
	strict := policy(t, workload.Action_DENY, &workload.Match{NotPrincipals: []*workload.StringMatch{presenceM}})
	allowBlock := policy(t, workload.Action_ALLOW, &workload.Match{SourceIps: []*workload.IPPrefix{prefixOf("10.1.0.0/16")}, NotDestinationPorts: []uint32{22}})
	allowL7 := policy(t, workload.Action_ALLOW, &workload.Match{Principals: []*workload.StringMatch{exactM("cluster.local/ns/a/sa/x")}, Methods: []*workload.StringMatch{exactM("GET")}})
	denyL7 := policy(t, workload.Action_DENY, &workload.Match{Paths: []*workload.StringMatch{exactM("/admin")}})
	notNS := policy(t, workload.Action_ALLOW, &workload.Match{NotNamespaces: []*workload.StringMatch{exactM("b")}})
	audit := policy(t, workload.Action_DENY, &workload.Match{})
	audit.DryRun = true
	allowNothing, err := Decode(&workload.Authorization{Name: "none", Namespace: "ns", Scope: workload.Scope_NAMESPACE})
	if err != nil {
		t.Fatal(err)
	}
	allowAll, err := Decode(&workload.Authorization{Name: "all", Namespace: "ns", Scope: workload.Scope_NAMESPACE, Rules: []*workload.Rule{{}}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		policies []*Policy
		conn     Conn
		allowed  bool
	}{
		{"no policies allow", nil, conn(idY, "10.1.0.1", 80), true},
		{"ALLOW principal admits it", []*Policy{allowX}, conn(idX, "10.1.0.1", 80), true},
		{"ALLOW principal refuses another", []*Policy{allowX}, conn(idY, "10.1.0.1", 80), false},
		{"ALLOW principal refuses plaintext", []*Policy{allowX}, conn("", "10.1.0.1", 80), false},
		{"DENY before ALLOW", []*Policy{allowAll, denyNSb}, conn(idY, "10.1.0.1", 80), false},
		{"DENY not matching leaves ALLOW", []*Policy{allowAll, denyNSb}, conn(idX, "10.1.0.1", 80), true},
		{"STRICT refuses plaintext", []*Policy{strict}, conn("", "10.1.0.1", 80), false},
		{"STRICT admits mTLS", []*Policy{strict}, conn(idY, "10.1.0.1", 80), true},
		{"ipBlocks admit inside", []*Policy{allowBlock}, conn("", "10.1.2.3", 80), true},
		{"ipBlocks refuse outside", []*Policy{allowBlock}, conn("", "10.2.2.3", 80), false},
		{"notPorts refuse", []*Policy{allowBlock}, conn("", "10.1.2.3", 22), false},
		{"L7 in ALLOW never matches", []*Policy{allowL7}, conn(idX, "10.1.0.1", 80), false},
		{"L7 in DENY denies everything else matched", []*Policy{denyL7}, conn(idX, "10.1.0.1", 80), false},
		{"notNamespaces admits other", []*Policy{notNS}, conn(idX, "10.1.0.1", 80), true},
		{"notNamespaces refuses it", []*Policy{notNS}, conn(idY, "10.1.0.1", 80), false},
		{"dry run does not deny", []*Policy{audit}, conn(idY, "10.1.0.1", 80), true},
		{"ALLOW without rules allows nothing", []*Policy{allowNothing}, conn(idX, "10.1.0.1", 80), false},
		{"empty rule allows all", []*Policy{allowAll}, conn("", "10.1.0.1", 80), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := Evaluate(tc.policies, tc.conn); d.Allowed != tc.allowed {
				t.Errorf("Evaluate = %+v, want allowed=%v", d, tc.allowed)
			}
		})
	}
}

func TestAppliesTo(t *testing.T) {
	p := policy(t, workload.Action_ALLOW)
	if p.AppliesTo("ns", nil) || !p.AppliesTo("other", []string{"ns/p"}) {
		t.Error("selector policy applies by name only")
	}
	ns, _ := Decode(&workload.Authorization{Name: "n", Namespace: "ns", Scope: workload.Scope_NAMESPACE})
	if !ns.AppliesTo("ns", nil) || ns.AppliesTo("other", nil) {
		t.Error("namespace policy applies to its namespace")
	}
	wp, _ := Decode(&workload.Authorization{Name: "w", Namespace: "ns", Scope: workload.Scope_GLOBAL, Targets: []*workload.PolicyTarget{{Kind: "Gateway"}}})
	if wp.AppliesTo("ns", []string{"ns/w"}) {
		t.Error("targetRefs policies are the waypoint's")
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	for name, a := range map[string]*workload.Authorization{
		"no name":     {Namespace: "ns"},
		"bad prefix":  {Name: "p", Namespace: "ns", Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{SourceIps: []*workload.IPPrefix{{Address: []byte{1, 2, 3}}}}}}}}}},
		"long prefix": {Name: "p", Namespace: "ns", Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{SourceIps: []*workload.IPPrefix{{Address: []byte{1, 2, 3, 4}, Length: 33}}}}}}}}},
		"port zero":   {Name: "p", Namespace: "ns", Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{DestinationPorts: []uint32{0}}}}}}}},
		"empty match": {Name: "p", Namespace: "ns", Rules: []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{{Principals: []*workload.StringMatch{{}}}}}}}}},
		"bad scope":   {Name: "p", Namespace: "ns", Scope: 9},
	} {
		if _, err := Decode(a); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
