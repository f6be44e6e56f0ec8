package rules

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestRenderGolden(t *testing.T) {
	withDNS := Default()
	withDNS.RedirectDNS = true
	gateway := Default()
	gateway.ProbeSNAT = netip.Addr{}
	gateway.ExemptSources = []netip.Prefix{netip.MustParsePrefix("10.244.1.1/32"), netip.MustParsePrefix("fd00::/64")}
	pods := []netip.Addr{netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("10.244.1.3"),
		netip.MustParseAddr("10.244.1.7"), netip.MustParseAddr("fd00::3")}
	tests := []struct {
		file string
		got  func() string
	}{
		{"pod-default.golden", func() string { return PodRuleset(Default()).String() }},
		{"pod-dns.golden", func() string { return PodRuleset(withDNS).String() }},
		{"pod-gateway-exempt.golden", func() string { return PodRuleset(gateway).String() }},
		{"host.golden", func() string { r, _ := HostRuleset(Default(), pods); return r.String() }},
		{"host-empty.golden", func() string { r, _ := HostRuleset(Default(), nil); return r.String() }},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) { golden(t, tt.file, tt.got()) })
	}
}

func TestHostRulesetDisabled(t *testing.T) {
	c := Default()
	c.ProbeSNAT = netip.Addr{}
	if _, ok := HostRuleset(c, nil); ok {
		t.Error("HostRuleset with no probe SNAT address: want disabled")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"default", func(*Config) {}, false},
		{"zero port", func(c *Config) { c.OutboundPort = 0 }, true},
		{"ipv6 snat", func(c *Config) { c.ProbeSNAT = netip.MustParseAddr("fd00::1") }, true},
		{"no snat", func(c *Config) { c.ProbeSNAT = netip.Addr{} }, false},
		{"bad prefix", func(c *Config) { c.ExemptSources = []netip.Prefix{{}} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			if err := c.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}
