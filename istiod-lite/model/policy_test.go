package model

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/api/workload"
)

func authzPolicy(ns, name string, spec securityv1.AuthorizationPolicySpec) *securityv1.AuthorizationPolicy {
	return &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3}, Spec: spec}
}

// mustAuthz parses the protojson form of an Authorization, for readable expectations.
func mustAuthz(t *testing.T, js string) *workload.Authorization {
	t.Helper()
	a := &workload.Authorization{}
	if err := protojson.Unmarshal([]byte(js), a); err != nil {
		t.Fatalf("bad expectation %s: %v", js, err)
	}
	return a
}

func TestTranslateAuthorizationPolicy(t *testing.T) {
	from := func(s securityv1.Source) []securityv1.RuleFrom { return []securityv1.RuleFrom{{Source: &s}} }
	to := func(o securityv1.Operation) []securityv1.RuleTo { return []securityv1.RuleTo{{Operation: &o}} }
	tests := []struct {
		name string
		ns   string
		spec securityv1.AuthorizationPolicySpec
		want string
	}{
		{
			name: "namespace allow with principals, ports and ip blocks",
			ns:   "app",
			spec: securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{
				From: from(securityv1.Source{Principals: []string{"cluster.local/ns/a/sa/b", "*", "cluster.local/ns/x/*"}, IPBlocks: []string{"10.0.0.0/8", "192.168.1.1"}}),
				To:   to(securityv1.Operation{Ports: []string{"8080"}}),
			}}},
			want: `{"name":"p","namespace":"app","scope":"NAMESPACE","rules":[{"clauses":[
				{"matches":[{"principals":[{"exact":"cluster.local/ns/a/sa/b"},{"presence":true},{"prefix":"cluster.local/ns/x/"}],
				  "sourceIps":[{"address":"CgAAAA==","length":8},{"address":"wKgBAQ==","length":32}]}]},
				{"matches":[{"destinationPorts":[8080]}]}]}]}`,
		},
		{
			name: "root namespace policy is global",
			ns:   "istio-system",
			spec: securityv1.AuthorizationPolicySpec{Action: securityv1.ActionDeny, Rules: []securityv1.Rule{{}}},
			want: `{"name":"p","namespace":"istio-system","scope":"GLOBAL","action":"DENY","rules":[{}]}`,
		},
		{
			name: "selector, service accounts and conditions",
			ns:   "app",
			spec: securityv1.AuthorizationPolicySpec{
				Selector: &securityv1.WorkloadSelector{MatchLabels: kv("app", "echo")},
				Rules: []securityv1.Rule{{
					From: from(securityv1.Source{ServiceAccounts: []string{"client", "other/sa"}, NotNamespaces: []string{"bad"}}),
					When: []securityv1.Condition{{Key: "destination.port", NotValues: []string{"9000"}}},
				}},
			},
			want: `{"name":"p","namespace":"app","scope":"WORKLOAD_SELECTOR","rules":[{"clauses":[
				{"matches":[{"notNamespaces":[{"exact":"bad"}],"principals":[{"suffix":"/ns/app/sa/client"},{"suffix":"/ns/other/sa/sa"}]}]},
				{"matches":[{"notDestinationPorts":[9000]}]}]}]}`,
		},
		{
			name: "audit is a dry run",
			ns:   "app",
			spec: securityv1.AuthorizationPolicySpec{Action: securityv1.ActionAudit},
			want: `{"name":"p","namespace":"app","scope":"NAMESPACE","dryRun":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := translateAuthorizationPolicy(authzPolicy(tt.ns, "p", tt.spec), "istio-system")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(mustAuthz(t, tt.want), got, protocmp.Transform()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestTranslateAuthorizationPolicyRejectsWhatItCannotEnforce(t *testing.T) {
	tests := []struct {
		name    string
		spec    securityv1.AuthorizationPolicySpec
		wantErr string
	}{
		{"custom action", securityv1.AuthorizationPolicySpec{Action: securityv1.ActionCustom}, "CUSTOM"},
		{"bad port", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Ports: []string{"http"}}}}}}}, `"http" is not a port number`},
		{"bad ip block", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{From: []securityv1.RuleFrom{{Source: &securityv1.Source{IPBlocks: []string{"10.0.0.0/33"}}}}}}}, "not an IP address"},
		{"unknown condition", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{When: []securityv1.Condition{{Key: "connection.sni", Values: []string{"x"}}}}}}, `condition key "connection.sni"`},
		{"condition without values", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{When: []securityv1.Condition{{Key: "source.ip"}}}}}, "neither values nor notValues"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := translateAuthorizationPolicy(authzPolicy("app", "p", tt.spec), "istio-system")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestForZtunnelFailsClosed(t *testing.T) {
	tests := []struct {
		name, full, want string
		changed          bool
	}{
		{
			name:    "allow rule with paths is dropped",
			full:    `{"rules":[{"clauses":[{"matches":[{"paths":[{"exact":"/admin"}],"principals":[{"exact":"a"}]}]}]},{"clauses":[{"matches":[{"principals":[{"exact":"b"}]}]}]}]}`,
			want:    `{"rules":[{"clauses":[{"matches":[{"principals":[{"exact":"b"}]}]}]}]}`,
			changed: true,
		},
		{
			name:    "deny rule loses its L7 part and denies more",
			full:    `{"action":"DENY","rules":[{"clauses":[{"matches":[{"principals":[{"exact":"a"}]}]},{"matches":[{"methods":[{"exact":"POST"}]}]}]}]}`,
			want:    `{"action":"DENY","rules":[{"clauses":[{"matches":[{"principals":[{"exact":"a"}]}]},{"matches":[{}]}]}]}`,
			changed: true,
		},
		{
			name: "L4 only is unchanged",
			full: `{"rules":[{"clauses":[{"matches":[{"destinationPorts":[80]}]}]}]}`,
			want: `{"rules":[{"clauses":[{"matches":[{"destinationPorts":[80]}]}]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			full := mustAuthz(t, tt.full)
			before := protojson.Format(full)
			got, changed := ForZtunnel(full)
			if d := cmp.Diff(mustAuthz(t, tt.want), got, protocmp.Transform()); d != "" || changed != tt.changed {
				t.Errorf("changed=%v want %v, (-want +got):\n%s", changed, tt.changed, d)
			}
			if protojson.Format(full) != before {
				t.Error("ForZtunnel modified its input")
			}
		})
	}
}

func TestPolicyStatus(t *testing.T) {
	in := &Inputs{
		Services: []*corev1.Service{service("app", "echo", nil, kv("app", "echo"), "10.96.0.1")},
		Gateways: []*gwv1.Gateway{waypointGateway("app", "wp", nil, "")},
		AuthorizationPolicies: []*securityv1.AuthorizationPolicy{
			authzPolicy("app", "ok", securityv1.AuthorizationPolicySpec{}),
			authzPolicy("app", "l7", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Paths: []string{"/x"}}}}}}}),
			authzPolicy("app", "custom", securityv1.AuthorizationPolicySpec{Action: securityv1.ActionCustom}),
			authzPolicy("app", "bad", securityv1.AuthorizationPolicySpec{Rules: []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Ports: []string{"x"}}}}}}}),
			authzPolicy("app", "to-wp", securityv1.AuthorizationPolicySpec{TargetRefs: []securityv1.PolicyTargetReference{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "wp"}}}),
			authzPolicy("app", "to-svc", securityv1.AuthorizationPolicySpec{TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "echo"}}}),
			authzPolicy("app", "to-missing", securityv1.AuthorizationPolicySpec{TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "nope"}}}),
		},
	}
	m := Build(in)
	want := map[string]string{ // name -> Accepted status/reason[,Warning reason]
		"ok": "True/Accepted", "l7": "True/Accepted,L7FieldsEnforcedFailClosed", "custom": "False/UnsupportedValue",
		"bad": "False/Invalid", "to-wp": "True/Accepted", "to-svc": "True/Accepted", "to-missing": "False/TargetNotFound",
	}
	for name, w := range want {
		st := m.Status[StatusKey{Kind: KindAuthorizationPolicy, Ref: Ref{Namespace: "app", Name: name}}]
		var got string
		for i, c := range st.Conditions {
			if i == 0 {
				got = string(c.Status) + "/" + c.Reason
			} else {
				got += "," + c.Reason
			}
			if c.ObservedGeneration != 3 {
				t.Errorf("%s: observedGeneration %d, want 3", name, c.ObservedGeneration)
			}
		}
		if got != w {
			t.Errorf("%s: status %q, want %q", name, got, w)
		}
	}
	for name, enforced := range map[string]bool{"app/ok": true, "app/l7": true, "app/custom": false, "app/bad": false, "app/to-missing": false} {
		if p := m.Policies[name]; (p != nil) != enforced {
			t.Errorf("%s: in model = %v, want %v", name, p != nil, enforced)
		}
	}
	if p := m.Policies["app/to-wp"]; p == nil || p.Ztunnel != nil || p.Waypoint == nil {
		t.Errorf("targetRefs policy must go to waypoints only: %+v", p)
	}
}
