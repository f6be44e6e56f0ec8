// Package xds turns istiod-lite's xDS resources (api/workload: Address =
// Workload | Service, Authorization, Route) into the waypoint's model.Snapshot.
// A [Store] is the handler of internal/xds's delta client: it holds the
// resources received, calls Build with all of them after every response and
// hands the result to the server's Update.
package xds

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/waypoint/authz"
	"github.com/ambit-mesh/ambit/waypoint/model"
)

// Build converts resources into a snapshot for the waypoint gateway;
// routes are passed in already converted (see [Route]). Resources that do not convert
// are left out (policies fail closed in the proxy only when invalid after
// conversion); the error names each.
func Build(gateway model.Ref, addresses []*workload.Address, auths []*workload.Authorization, routes []model.Route) (*model.Snapshot, error) {
	snap := &model.Snapshot{Gateway: gateway, Routes: routes}
	var errs []error
	// Workloads name their services "namespace/hostname"; the model uses
	// "namespace/name".
	byHost := map[string]string{}
	for _, a := range addresses {
		if svc := a.GetService(); svc != nil {
			s, err := Service(svc)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			byHost[s.Namespace+"/"+s.Hostname] = s.Key()
			snap.Services = append(snap.Services, s)
		}
	}
	for _, a := range addresses {
		if w := a.GetWorkload(); w != nil {
			mw, err := Workload(w, byHost)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			snap.Workloads = append(snap.Workloads, mw)
		}
	}
	for _, az := range auths {
		p, err := Policy(az)
		if err != nil {
			errs = append(errs, err)
			p = p.FailClosed()
		}
		snap.Policies = append(snap.Policies, p)
	}
	return snap, errors.Join(errs...)
}

// Service converts a Service resource.
func Service(s *workload.Service) (model.Service, error) {
	out := model.Service{Namespace: s.GetNamespace(), Name: s.GetName(), Hostname: s.GetHostname()}
	if out.Name == "" || out.Namespace == "" {
		return out, fmt.Errorf("service %q: no name or namespace", s.GetHostname())
	}
	for _, a := range s.GetAddresses() {
		ip, ok := netip.AddrFromSlice(a.GetAddress())
		if !ok {
			return out, fmt.Errorf("service %s: address of %d bytes", out.Key(), len(a.GetAddress()))
		}
		out.Addresses = append(out.Addresses, ip.Unmap())
	}
	for _, p := range s.GetPorts() {
		sp, err := port(p.GetServicePort())
		if err != nil {
			return out, fmt.Errorf("service %s: %w", out.Key(), err)
		}
		tp, err := port(p.GetTargetPort())
		if err != nil {
			return out, fmt.Errorf("service %s: %w", out.Key(), err)
		}
		if sp == 0 {
			return out, fmt.Errorf("service %s: port 0", out.Key())
		}
		out.Ports = append(out.Ports, model.Port{Port: sp, TargetPort: tp})
	}
	return out, nil
}

// Workload converts a Workload resource; byHost maps its services'
// "namespace/hostname" keys to "namespace/name".
func Workload(w *workload.Workload, byHost map[string]string) (model.Workload, error) {
	out := model.Workload{
		UID: w.GetUid(), Namespace: w.GetNamespace(), Name: w.GetName(), WorkloadName: w.GetWorkloadName(),
		CanonicalService: w.GetCanonicalName(), CanonicalRevision: w.GetCanonicalRevision(),
		ServiceAccount: w.GetServiceAccount(), TrustDomain: w.GetTrustDomain(),
		Unhealthy: w.GetStatus() == workload.WorkloadStatus_UNHEALTHY,
		Services:  map[string]map[uint16]uint16{},
	}
	name := out.Namespace + "/" + out.Name
	if w.GetTunnelProtocol() != workload.TunnelProtocol_HBONE {
		// The waypoint only speaks HBONE upstream: never plaintext to the mesh.
		out.Unhealthy = true
	}
	for _, a := range w.GetAddresses() {
		ip, ok := netip.AddrFromSlice(a)
		if !ok {
			return out, fmt.Errorf("workload %s: address of %d bytes", name, len(a))
		}
		out.Addresses = append(out.Addresses, ip.Unmap())
	}
	if _, err := out.Identity(); err != nil {
		return out, err
	}
	for host, pl := range w.GetServices() {
		key, ok := byHost[host]
		if !ok {
			continue // a service this waypoint does not know
		}
		ports := map[uint16]uint16{}
		for _, p := range pl.GetPorts() {
			sp, err := port(p.GetServicePort())
			if err != nil {
				return out, fmt.Errorf("workload %s: %w", name, err)
			}
			tp, err := port(p.GetTargetPort())
			if err != nil {
				return out, fmt.Errorf("workload %s: %w", name, err)
			}
			if tp == 0 {
				tp = sp
			}
			ports[sp] = tp
		}
		out.Services[key] = ports
	}
	return out, nil
}

func port(p uint32) (uint16, error) {
	if p > 65535 {
		return 0, fmt.Errorf("port %d out of range", p)
	}
	return uint16(p), nil
}

// Policy converts an Authorization resource.
func Policy(a *workload.Authorization) (model.Policy, error) {
	out := model.Policy{Policy: authz.Policy{Namespace: a.GetNamespace(), Name: a.GetName(), DryRun: a.GetDryRun()}}
	key := out.Key()
	switch a.GetAction() {
	case workload.Action_ALLOW:
		out.Action = authz.Allow
	case workload.Action_DENY:
		out.Action = authz.Deny
	default:
		out.Action = authz.Deny // FailClosed then denies everything
		return out, fmt.Errorf("authorization %s: unknown action %v", key, a.GetAction())
	}
	for _, t := range a.GetTargets() {
		out.Targets = append(out.Targets, model.Ref{Kind: t.GetKind(), Namespace: t.GetNamespace(), Name: t.GetName()})
	}
	for _, r := range a.GetRules() {
		var rule authz.Rule
		for _, c := range r.GetClauses() {
			var clause authz.Clause
			for _, m := range c.GetMatches() {
				mm, err := match(m)
				if err != nil {
					return out, fmt.Errorf("authorization %s: %w", key, err)
				}
				clause.Matches = append(clause.Matches, mm)
			}
			rule.Clauses = append(rule.Clauses, clause)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out, nil
}

func match(m *workload.Match) (authz.Match, error) {
	var (
		out  authz.Match
		errs []error
	)
	pfx := func(ps []*workload.IPPrefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range ps {
			ip, ok := netip.AddrFromSlice(p.GetAddress())
			if !ok || int(p.GetLength()) > ip.BitLen() {
				errs = append(errs, fmt.Errorf("bad IP prefix %x/%d", p.GetAddress(), p.GetLength()))
				continue
			}
			out = append(out, netip.PrefixFrom(ip, int(p.GetLength())).Masked())
		}
		return out
	}
	ports := func(ps []uint32) []uint16 {
		var out []uint16
		for _, p := range ps {
			q, err := port(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, q)
		}
		return out
	}
	out.Principals, out.NotPrincipals = strs(m.GetPrincipals(), &errs), strs(m.GetNotPrincipals(), &errs)
	out.Namespaces, out.NotNamespaces = strs(m.GetNamespaces(), &errs), strs(m.GetNotNamespaces(), &errs)
	out.SourceIPs, out.NotSourceIPs = pfx(m.GetSourceIps()), pfx(m.GetNotSourceIps())
	out.DestinationIPs, out.NotDestinationIPs = pfx(m.GetDestinationIps()), pfx(m.GetNotDestinationIps())
	out.Ports, out.NotPorts = ports(m.GetDestinationPorts()), ports(m.GetNotDestinationPorts())
	out.Hosts, out.NotHosts = strs(m.GetHosts(), &errs), strs(m.GetNotHosts(), &errs)
	out.Methods, out.NotMethods = strs(m.GetMethods(), &errs), strs(m.GetNotMethods(), &errs)
	out.Paths, out.NotPaths = paths(m.GetPaths(), &errs), paths(m.GetNotPaths(), &errs)
	out.RequestPrincipals, out.NotRequestPrincipals = strs(m.GetRequestPrincipals(), &errs), strs(m.GetNotRequestPrincipals(), &errs)
	out.RemoteIPs, out.NotRemoteIPs = pfx(m.GetRemoteIps()), pfx(m.GetNotRemoteIps())
	for _, h := range m.GetRequestHeaders() {
		out.Headers = append(out.Headers, authz.HeaderMatch{Name: h.GetName(), Values: strs(h.GetValues(), &errs), NotValues: strs(h.GetNotValues(), &errs)})
	}
	return out, errors.Join(errs...)
}

// strs converts string matches. A match of a type it does not know is an
// error: dropping it could widen a positive list to "anything".
func strs(ms []*workload.StringMatch, errs *[]error) []authz.StringMatch {
	out := make([]authz.StringMatch, 0, len(ms))
	for _, m := range ms {
		switch t := m.GetMatchType().(type) {
		case *workload.StringMatch_Exact:
			out = append(out, authz.StringMatch{Type: authz.Exact, Value: t.Exact})
		case *workload.StringMatch_Prefix:
			out = append(out, authz.StringMatch{Type: authz.Prefix, Value: t.Prefix})
		case *workload.StringMatch_Suffix:
			out = append(out, authz.StringMatch{Type: authz.Suffix, Value: t.Suffix})
		case *workload.StringMatch_Presence:
			out = append(out, authz.StringMatch{Type: authz.Presence})
		default:
			*errs = append(*errs, fmt.Errorf("string match of unknown type %T", t))
		}
	}
	return out
}

// paths converts path matches. An exact path holding Istio's template
// operators ({*}, {**}) is read as a template: until api/ has a template
// variant, istiod-lite can send templates as exact values.
func paths(ms []*workload.StringMatch, errs *[]error) []authz.StringMatch {
	out := strs(ms, errs)
	for i, m := range out {
		if m.Type == authz.Exact && strings.Contains(m.Value, "{*") {
			out[i].Type = authz.Template
		}
	}
	return out
}
