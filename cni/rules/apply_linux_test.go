package rules

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/ambit-mesh/ambit/cni/netns/netnstest"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// dump is what the kernel holds in ns, in Ruleset.String's format.
func dump(t *testing.T, ns *netnstest.NS, family string, route *PolicyRoute) string {
	t.Helper()
	out := ns.Run(t, "nft", "list", "table", family, TableName)
	if route == nil {
		return out
	}
	for _, l := range strings.Split(ns.Run(t, "ip", "rule", "show"), "\n") {
		if strings.Contains(l, fmt.Sprintf("lookup %d", route.Table)) {
			out += "ip rule: " + strings.TrimSpace(l) + "\n"
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(ns.Run(t, "ip", "route", "show", "table", fmt.Sprint(route.Table))), "\n") {
		out += fmt.Sprintf("ip route table %d: %s\n", route.Table, strings.TrimSpace(l))
	}
	return out
}

func TestPrivilegedApplyMatchesGolden(t *testing.T) {
	privtest.Require(t)
	withDNS := Default()
	withDNS.RedirectDNS = true
	gateway := Default()
	gateway.ProbeSNAT = netip.Addr{}
	gateway.ExemptSources = []netip.Prefix{netip.MustParsePrefix("10.244.1.1/32"), netip.MustParsePrefix("fd00::/64")}
	for _, tt := range []struct {
		golden string
		cfg    Config
	}{{"pod-default.golden", Default()}, {"pod-dns.golden", withDNS}, {"pod-gateway-exempt.golden", gateway}} {
		t.Run(tt.golden, func(t *testing.T) {
			ns := netnstest.New(t)
			r := PodRuleset(tt.cfg)
			// Twice: re-applying must leave exactly one copy.
			for range 2 {
				if err := Apply(ns.Fd(), r); err != nil {
					t.Fatal(err)
				}
			}
			golden(t, tt.golden, dump(t, ns, "inet", r.Route))
			if ok, err := Installed(ns.Fd(), r); err != nil || !ok {
				t.Errorf("Installed() = %v, %v; want true", ok, err)
			}
			if err := Remove(ns.Fd(), r.Family, r.Route); err != nil {
				t.Fatal(err)
			}
			assertClean(t, ns)
			if ok, err := Installed(ns.Fd(), r); err != nil || ok {
				t.Errorf("after Remove: Installed() = %v, %v; want false", ok, err)
			}
			// Removing what is gone is fine.
			if err := Remove(ns.Fd(), r.Family, r.Route); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

func TestPrivilegedHostApplyMatchesGolden(t *testing.T) {
	privtest.Require(t)
	ns := netnstest.New(t)
	pods := []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("10.244.1.3"),
		netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00::3")}
	r, _ := HostRuleset(Default(), pods)
	for range 2 {
		if err := Apply(ns.Fd(), r); err != nil {
			t.Fatal(err)
		}
	}
	got := normalizeElements(dump(t, ns, "ip", nil))
	golden(t, "host.golden", got)
	empty, _ := HostRuleset(Default(), nil)
	if err := Apply(ns.Fd(), empty); err != nil {
		t.Fatal(err)
	}
	golden(t, "host-empty.golden", dump(t, ns, "ip", nil))
	if err := Remove(ns.Fd(), nftables.TableFamilyIPv4, nil); err != nil {
		t.Fatal(err)
	}
	assertClean(t, ns)
}

// normalizeElements sorts a set's elements line: the kernel lists a hash set in its
// own order.
func normalizeElements(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		pre, rest, ok := strings.Cut(l, "elements = { ")
		if !ok {
			continue
		}
		var addrs []netip.Addr
		for _, f := range strings.Split(strings.TrimSuffix(rest, " }"), ", ") {
			addrs = append(addrs, netip.MustParseAddr(f))
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		strs := make([]string, len(addrs))
		for j, a := range addrs {
			strs[j] = a.String()
		}
		lines[i] = pre + "elements = { " + strings.Join(strs, ", ") + " }"
	}
	return strings.Join(lines, "\n")
}

func assertClean(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	if got := strings.TrimSpace(ns.Run(t, "nft", "list", "ruleset")); got != "" {
		t.Errorf("ruleset after Remove:\n%s", got)
	}
	if got := ns.Run(t, "ip", "rule", "show"); strings.Contains(got, "lookup 133") {
		t.Errorf("ip rules after Remove:\n%s", got)
	}
	// iproute2 fails on a table that does not exist: that is clean too.
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "ip", "route", "show", "table", "133").CombinedOutput()
	if err == nil && strings.TrimSpace(string(out)) != "" {
		t.Errorf("route table 133 after Remove:\n%s", out)
	}
}
