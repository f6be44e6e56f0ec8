package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/api/workload"
)

// peerAuthns holds the PeerAuthentications in force, Istio's way: at each level (mesh,
// namespace, workload selector) the oldest policy wins.
type peerAuthns struct {
	root     *securityv1.PeerAuthentication
	byNS     map[string]*securityv1.PeerAuthentication
	selector map[string][]*securityv1.PeerAuthentication // by namespace, oldest first
}

// ConvertedPeerAuthenticationPrefix starts the name of the Authorization a
// PeerAuthentication is converted to (underscores cannot clash with Kubernetes names).
const ConvertedPeerAuthenticationPrefix = "converted_peer_authentication_"

func indexPeerAuthns(pas []*securityv1.PeerAuthentication, rootNS string) peerAuthns {
	sorted := slices.Clone(pas)
	slices.SortFunc(sorted, func(a, b *securityv1.PeerAuthentication) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	idx := peerAuthns{byNS: map[string]*securityv1.PeerAuthentication{}, selector: map[string][]*securityv1.PeerAuthentication{}}
	for _, pa := range sorted {
		switch {
		case pa.Spec.Selector != nil && len(pa.Spec.Selector.MatchLabels) > 0:
			idx.selector[pa.Namespace] = append(idx.selector[pa.Namespace], pa)
		case pa.Namespace == rootNS:
			if idx.root == nil {
				idx.root = pa
			}
			if idx.byNS[pa.Namespace] == nil {
				idx.byNS[pa.Namespace] = pa
			}
		default:
			if idx.byNS[pa.Namespace] == nil {
				idx.byNS[pa.Namespace] = pa
			}
		}
	}
	return idx
}

func mode(pa *securityv1.PeerAuthentication) securityv1.MTLSMode {
	if pa == nil || pa.Spec.MTLS == nil || pa.Spec.MTLS.Mode == "" {
		return securityv1.MTLSUnset
	}
	return pa.Spec.MTLS.Mode
}

// effectiveMode resolves UNSET up the chain; PERMISSIVE when nothing is set.
func effectiveMode(chain ...*securityv1.PeerAuthentication) securityv1.MTLSMode {
	for _, pa := range chain {
		if m := mode(pa); m != securityv1.MTLSUnset {
			return m
		}
	}
	return securityv1.MTLSPermissive
}

// forWorkload is the PeerAuthentication deciding a workload's mode: its oldest
// matching selector policy, else its namespace's, else the mesh's.
func (idx peerAuthns) forWorkload(w *Workload) *securityv1.PeerAuthentication {
	for _, pa := range idx.selector[w.Namespace] {
		if labels.SelectorFromSet(pa.Spec.Selector.MatchLabels).Matches(labels.Set(w.Labels)) {
			return pa
		}
	}
	if pa := idx.byNS[w.Namespace]; pa != nil {
		return pa
	}
	return idx.root
}

// convertPeerAuthentication turns a PeerAuthentication into the DENY Authorization that
// makes ztunnel refuse plaintext where the effective mode is STRICT (DISABLE and
// PERMISSIVE both accept plaintext in ambient mode, as in Istio). It returns nil when
// nothing is STRICT. Port-level modes apply to the workload's target ports.
func convertPeerAuthentication(pa *securityv1.PeerAuthentication, idx peerAuthns, rootNS string) (*workload.Authorization, error) {
	var def securityv1.MTLSMode
	var strict, notStrict []uint32
	switch {
	case pa.Spec.Selector != nil && len(pa.Spec.Selector.MatchLabels) > 0:
		def = effectiveMode(pa, idx.byNS[pa.Namespace], idx.root)
		for key, m := range pa.Spec.PortLevelMTLS {
			port, err := strconv.ParseUint(key, 10, 16)
			if err != nil || port == 0 {
				return nil, fmt.Errorf("portLevelMtls: %q is not a port number (1-65535)", key)
			}
			if m.Mode == securityv1.MTLSStrict {
				strict = append(strict, uint32(port))
			} else if m.Mode != securityv1.MTLSUnset && m.Mode != "" {
				notStrict = append(notStrict, uint32(port))
			}
		}
	case pa.Namespace == rootNS:
		def = effectiveMode(pa)
	default:
		def = effectiveMode(pa, idx.root)
	}
	slices.Sort(strict)
	slices.Sort(notStrict)
	unauthenticated := []*workload.StringMatch{{MatchType: &workload.StringMatch_Presence{Presence: true}}}
	var m *workload.Match
	switch {
	case def == securityv1.MTLSStrict:
		m = &workload.Match{NotPrincipals: unauthenticated, NotDestinationPorts: notStrict}
	case len(strict) > 0:
		m = &workload.Match{NotPrincipals: unauthenticated, DestinationPorts: strict}
	default:
		return nil, nil
	}
	return &workload.Authorization{
		Name:      ConvertedPeerAuthenticationPrefix + pa.Name,
		Namespace: pa.Namespace,
		Scope:     workload.Scope_WORKLOAD_SELECTOR,
		Action:    workload.Action_DENY,
		Rules:     []*workload.Rule{{Clauses: []*workload.Clause{{Matches: []*workload.Match{m}}}}},
	}, nil
}
