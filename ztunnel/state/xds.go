package state

import (
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/ambit-mesh/ambit/api/workload"
	"github.com/ambit-mesh/ambit/ztunnel/authz"
)

// Apply applies one delta xDS response of Address or Authorization
// resources in one update. A resource that does not decode is rejected (its
// error returned under its name) and leaves the previous version of that
// resource in place; the good ones are applied.
func (t *Tables) Apply(typeURL string, resources []*discovery.Resource, removed []string) map[string]error {
	rejected := map[string]error{}
	addrs := map[string]*Workload{}
	svcs := map[string]*Service{}
	policies := map[string]*authz.Policy{}
	for _, r := range resources {
		name := r.GetName()
		if name == "" {
			rejected["(unnamed)"] = fmt.Errorf("%w: resource without a name", ErrInvalid)
			continue
		}
		if r.GetResource().GetTypeUrl() != typeURL {
			rejected[name] = fmt.Errorf("%w: resource of type %q in a %s response", ErrInvalid, r.GetResource().GetTypeUrl(), typeURL)
			continue
		}
		switch typeURL {
		case workload.AddressType:
			var a workload.Address
			if err := r.GetResource().UnmarshalTo(&a); err != nil {
				rejected[name] = fmt.Errorf("%w: %w", ErrInvalid, err)
				continue
			}
			w, s, err := DecodeAddress(&a)
			switch {
			case err != nil:
				rejected[name] = err
			case w != nil:
				addrs[name] = w
			default:
				svcs[name] = s
			}
		case workload.AuthorizationType:
			var a workload.Authorization
			if err := r.GetResource().UnmarshalTo(&a); err != nil {
				rejected[name] = fmt.Errorf("%w: %w", ErrInvalid, err)
				continue
			}
			p, err := authz.Decode(&a)
			if err != nil {
				rejected[name] = fmt.Errorf("%w: %w", ErrInvalid, err)
				continue
			}
			if p.Name != name {
				rejected[name] = fmt.Errorf("%w: policy %s under resource name %s", ErrInvalid, p.Name, name)
				continue
			}
			policies[name] = p
		default:
			rejected[name] = fmt.Errorf("%w: unknown type %s", ErrInvalid, typeURL)
		}
	}
	t.Update(addrs, svcs, policies, removed)
	if len(rejected) == 0 {
		return nil
	}
	return rejected
}
