package rules

import (
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Apply makes the network namespace netns (an open nsfs file descriptor) hold exactly
// r: Ambit's table is replaced in one nftables transaction (so there is never a moment
// without redirection, and applying twice leaves one copy), then the policy routing is
// added where missing.
func Apply(netnsFd int, r Ruleset) error {
	conn, err := nftables.New(nftables.WithNetNSFd(netnsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: r.Family, Name: TableName}
	// Add-then-delete drops an existing table without failing when there is none.
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	var set *nftables.Set
	if r.Set != nil {
		set = &nftables.Set{Table: t, Name: r.Set.Name, KeyType: nftables.TypeIPAddr}
		elems := make([]nftables.SetElement, len(r.Set.Addrs))
		for i, a := range r.Set.Addrs {
			elems[i] = nftables.SetElement{Key: a.AsSlice()}
		}
		if err := conn.AddSet(set, elems); err != nil {
			return fmt.Errorf("nftables set %s: %w", r.Set.Name, err)
		}
	}
	accept := nftables.ChainPolicyAccept
	for _, c := range r.Chains {
		ch := conn.AddChain(&nftables.Chain{Name: c.Name, Table: t, Type: c.Type, Hooknum: c.Hook, Priority: c.Priority, Policy: &accept})
		for _, rl := range c.Rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: withSetIDs(rl.Exprs, set)})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: replace table %s %s: %w", familyName(r.Family), TableName, err)
	}
	if r.Route != nil {
		if err := addRoute(netnsFd, *r.Route); err != nil {
			return err
		}
	}
	return nil
}

// withSetIDs points set lookups at the set created in the same transaction.
func withSetIDs(exprs []expr.Any, set *nftables.Set) []expr.Any {
	if set == nil {
		return exprs
	}
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		if l, ok := e.(*expr.Lookup); ok && l.SetName == set.Name {
			c := *l
			c.SetID = set.ID
			e = &c
		}
		out[i] = e
	}
	return out
}

// Remove deletes Ambit's table of family and, if route is non-nil, its policy routing
// from netns. What is already gone is not an error.
func Remove(netnsFd int, family nftables.TableFamily, route *PolicyRoute) error {
	conn, err := nftables.New(nftables.WithNetNSFd(netnsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: family, Name: TableName}
	conn.AddTable(t)
	conn.DelTable(t)
	var errs []error
	if err := conn.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("nftables: delete table %s %s: %w", familyName(family), TableName, err))
	}
	if route != nil {
		errs = append(errs, delRoute(netnsFd, *route))
	}
	return errors.Join(errs...)
}

// Installed reports whether netns holds Ambit's table with r's chains, each with r's
// number of rules. It is the cheap check the agent and CNI CHECK use; the golden tests
// compare the full contents.
func Installed(netnsFd int, r Ruleset) (bool, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(netnsFd))
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	t, err := conn.ListTableOfFamily(TableName, r.Family)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("nftables: list table: %w", err)
	}
	for _, c := range r.Chains {
		rules, err := conn.GetRules(t, &nftables.Chain{Name: c.Name, Table: t})
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("nftables: list chain %s: %w", c.Name, err)
		}
		if len(rules) != len(c.Rules) {
			return false, nil
		}
	}
	return true, nil
}

func handleAt(netnsFd int) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(netnsFd))
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return h, nil
}

func (p PolicyRoute) rule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Mark = p.Mark
	mask := p.Mask
	r.Mask = &mask
	r.Table = p.Table
	r.Priority = p.Priority
	return r
}

func (p PolicyRoute) route(lo int) *netlink.Route {
	return &netlink.Route{
		Type: unix.RTN_LOCAL, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		LinkIndex: lo, Table: p.Table, Scope: netlink.SCOPE_HOST,
	}
}

func addRoute(netnsFd int, p PolicyRoute) error {
	h, err := handleAt(netnsFd)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	if err := h.RouteReplace(p.route(lo.Attrs().Index)); err != nil {
		return fmt.Errorf("route table %d: %w", p.Table, err)
	}
	has, err := hasRule(h, p)
	if err != nil || has {
		return err
	}
	if err := h.RuleAdd(p.rule()); err != nil {
		return fmt.Errorf("ip rule fwmark %#x lookup %d: %w", p.Mark, p.Table, err)
	}
	return nil
}

func hasRule(h *netlink.Handle, p PolicyRoute) (bool, error) {
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return false, fmt.Errorf("list ip rules: %w", err)
	}
	for _, r := range rules {
		if r.Table == p.Table && r.Mark == p.Mark && r.Priority == p.Priority {
			return true, nil
		}
	}
	return false, nil
}

func delRoute(netnsFd int, p PolicyRoute) error {
	h, err := handleAt(netnsFd)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for {
		has, err := hasRule(h, p)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if !has {
			break
		}
		if err := h.RuleDel(p.rule()); err != nil {
			errs = append(errs, fmt.Errorf("delete ip rule: %w", err))
			break
		}
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.RouteDel(p.route(lo.Attrs().Index)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route table %d: %w", p.Table, err))
		}
	}
	return errors.Join(errs...)
}
