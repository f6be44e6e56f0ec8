package model

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
)

func peerAuthn(ns, name string, age int, selector map[string]string, mode securityv1.MTLSMode, ports map[string]securityv1.MTLSMode) *securityv1.PeerAuthentication {
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000-age), 0)),
	}}
	if selector != nil {
		pa.Spec.Selector = &securityv1.WorkloadSelector{MatchLabels: selector}
	}
	if mode != "" {
		pa.Spec.MTLS = &securityv1.MutualTLS{Mode: mode}
	}
	if ports != nil {
		pa.Spec.PortLevelMTLS = map[string]securityv1.MutualTLS{}
		for p, m := range ports {
			pa.Spec.PortLevelMTLS[p] = securityv1.MutualTLS{Mode: m}
		}
	}
	return pa
}

func TestPeerAuthenticationDecidesPerWorkload(t *testing.T) {
	tests := []struct {
		name string
		pas  []*securityv1.PeerAuthentication
		// want maps workload (pod name in namespace app) to the policy names it lists.
		want map[string][]string
		// wantAuthz is the converted Authorization for "app/converted_peer_authentication_sel", if any.
		wantAuthz string
	}{
		{
			name: "mesh strict applies everywhere",
			pas:  []*securityv1.PeerAuthentication{peerAuthn("istio-system", "mesh", 0, nil, securityv1.MTLSStrict, nil)},
			want: map[string][]string{"echo": {"istio-system/converted_peer_authentication_mesh"}, "other": {"istio-system/converted_peer_authentication_mesh"}},
		},
		{
			name: "namespace permissive overrides mesh strict",
			pas: []*securityv1.PeerAuthentication{
				peerAuthn("istio-system", "mesh", 0, nil, securityv1.MTLSStrict, nil),
				peerAuthn("app", "ns", 0, nil, securityv1.MTLSPermissive, nil),
			},
			want: map[string][]string{"echo": nil, "other": nil},
		},
		{
			name: "selector unset inherits namespace strict, port 8080 permissive",
			pas: []*securityv1.PeerAuthentication{
				peerAuthn("app", "ns", 0, nil, securityv1.MTLSStrict, nil),
				peerAuthn("app", "sel", 0, kv("app", "echo"), securityv1.MTLSUnset, map[string]securityv1.MTLSMode{"8080": securityv1.MTLSPermissive}),
			},
			want: map[string][]string{"echo": {"app/converted_peer_authentication_sel"}, "other": {"app/converted_peer_authentication_ns"}},
			wantAuthz: `{"name":"converted_peer_authentication_sel","namespace":"app","scope":"WORKLOAD_SELECTOR","action":"DENY",
				"rules":[{"clauses":[{"matches":[{"notPrincipals":[{"presence":true}],"notDestinationPorts":[8080]}]}]}]}`,
		},
		{
			name: "permissive selector with one strict port",
			pas: []*securityv1.PeerAuthentication{
				peerAuthn("app", "sel", 0, kv("app", "echo"), securityv1.MTLSPermissive, map[string]securityv1.MTLSMode{"9000": securityv1.MTLSStrict}),
			},
			want: map[string][]string{"echo": {"app/converted_peer_authentication_sel"}, "other": nil},
			wantAuthz: `{"name":"converted_peer_authentication_sel","namespace":"app","scope":"WORKLOAD_SELECTOR","action":"DENY",
				"rules":[{"clauses":[{"matches":[{"notPrincipals":[{"presence":true}],"destinationPorts":[9000]}]}]}]}`,
		},
		{
			name: "oldest selector policy wins",
			pas: []*securityv1.PeerAuthentication{
				peerAuthn("app", "young", 1, kv("app", "echo"), securityv1.MTLSPermissive, nil),
				peerAuthn("app", "sel", 5, kv("app", "echo"), securityv1.MTLSStrict, nil),
			},
			want:      map[string][]string{"echo": {"app/converted_peer_authentication_sel"}, "other": nil},
			wantAuthz: `{"name":"converted_peer_authentication_sel","namespace":"app","scope":"WORKLOAD_SELECTOR","action":"DENY","rules":[{"clauses":[{"matches":[{"notPrincipals":[{"presence":true}]}]}]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Build(&Inputs{
				Pods: []*corev1.Pod{
					pod("app", "echo", "echo", "n1", "10.0.0.1", kv("app", "echo")),
					pod("app", "other", "other", "n1", "10.0.0.2", kv("app", "other")),
				},
				PeerAuthentications: tt.pas,
			})
			for name, want := range tt.want {
				w := m.Workloads[WorkloadUID("Kubernetes", "app", name)]
				if d := cmp.Diff(want, w.Policies); d != "" {
					t.Errorf("%s policies (-want +got):\n%s", name, d)
				}
			}
			if tt.wantAuthz != "" {
				p := m.Policies["app/converted_peer_authentication_sel"]
				if p == nil {
					t.Fatal("no converted policy")
				}
				if d := cmp.Diff(mustAuthz(t, tt.wantAuthz), p.Ztunnel, protocmp.Transform()); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestPeerAuthenticationStatus(t *testing.T) {
	m := Build(&Inputs{PeerAuthentications: []*securityv1.PeerAuthentication{
		peerAuthn("app", "bad-port", 0, kv("app", "x"), securityv1.MTLSStrict, map[string]securityv1.MTLSMode{"http": securityv1.MTLSStrict}),
		peerAuthn("app", "ports-no-selector", 0, nil, securityv1.MTLSStrict, map[string]securityv1.MTLSMode{"80": securityv1.MTLSDisable}),
	}})
	bad := m.Status[StatusKey{KindPeerAuthentication, Ref{"app", "bad-port"}}]
	if c := bad.Conditions[0]; c.Status != metav1.ConditionFalse || c.Reason != ReasonInvalid {
		t.Errorf("bad port: %+v", c)
	}
	warn := m.Status[StatusKey{KindPeerAuthentication, Ref{"app", "ports-no-selector"}}]
	if len(warn.Conditions) != 2 || warn.Conditions[1].Reason != ReasonPortLevelIgnored {
		t.Errorf("port level without selector: %+v", warn.Conditions)
	}
}
