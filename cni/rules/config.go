package rules

import (
	"errors"
	"fmt"
	"net/netip"
)

// Well-known values shared with ztunnel (Istio's values, so a ztunnel built for Istio's
// in-pod mode would find what it expects).
const (
	// ZtunnelMark is the mark ztunnel sets (SO_MARK) on its in-pod sockets; traffic
	// carrying it is never captured again.
	ZtunnelMark uint32 = 0x539
	// MarkMask is the part of the packet mark Ambit owns.
	MarkMask uint32 = 0xfff
	// ConnMark marks connections ztunnel opened inside the pod, so replies to them are
	// routed back to ztunnel's (possibly transparent) socket.
	ConnMark uint32 = 0x111
	// RouteTable is the policy-routing table that delivers ConnMark-ed replies locally.
	RouteTable = 133
	// RulePriority is the priority of the policy-routing rule pointing at RouteTable.
	RulePriority = 32764
	// TableName names Ambit's nftables table in the pod and in the node.
	TableName = "ambit"
	// ProbeSetName names the set of enrolled pod addresses in the node's table.
	ProbeSetName = "ambient-pods"
)

// DefaultProbeSNAT is the address kubelet probes to enrolled pods are rewritten to in
// the node's network namespace (Istio's choice), and exempt from capture in the pod.
var DefaultProbeSNAT = netip.MustParseAddr("169.254.7.127")

// Config says how pods are captured. The zero value is not valid; start from Default.
type Config struct {
	// OutboundPort is ztunnel's in-pod outbound listener (15001).
	OutboundPort uint16
	// InboundPlaintextPort is ztunnel's in-pod listener for plaintext inbound (15006).
	InboundPlaintextPort uint16
	// InboundHBONEPort is ztunnel's in-pod HBONE listener (15008); traffic to it is
	// not redirected.
	InboundHBONEPort uint16
	// DNSPort is ztunnel's in-pod DNS proxy (15053), used when RedirectDNS is set.
	DNSPort uint16
	// RedirectDNS sends the pod's DNS (udp and tcp port 53) to DNSPort.
	RedirectDNS bool
	// ProbeSNAT is the source address kubelet probes get in the node's network
	// namespace; the pod exempts it from capture. Invalid (zero) disables the rewrite.
	ProbeSNAT netip.Addr
	// ExemptSources are extra inbound source prefixes that skip capture, for nodes
	// where probes cannot be rewritten (for example the pod's gateway address).
	ExemptSources []netip.Prefix
}

// Default returns Ambit's defaults: Istio's ports, no DNS capture, probes rewritten
// to DefaultProbeSNAT.
func Default() Config {
	return Config{
		OutboundPort:         15001,
		InboundPlaintextPort: 15006,
		InboundHBONEPort:     15008,
		DNSPort:              15053,
		ProbeSNAT:            DefaultProbeSNAT,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	ports := map[string]uint16{
		"outbound port": c.OutboundPort, "inbound plaintext port": c.InboundPlaintextPort,
		"inbound HBONE port": c.InboundHBONEPort, "DNS port": c.DNSPort,
	}
	for name, p := range ports {
		if p == 0 {
			errs = append(errs, fmt.Errorf("%s must not be 0", name))
		}
	}
	if c.ProbeSNAT.IsValid() && !c.ProbeSNAT.Is4() {
		errs = append(errs, fmt.Errorf("probe SNAT address %s: only IPv4 is supported", c.ProbeSNAT))
	}
	for _, p := range c.ExemptSources {
		if !p.IsValid() {
			errs = append(errs, errors.New("invalid exempt source prefix"))
		}
	}
	return errors.Join(errs...)
}

// exempt lists the inbound sources the pod does not capture.
func (c Config) exempt() []netip.Prefix {
	var out []netip.Prefix
	if c.ProbeSNAT.IsValid() {
		out = append(out, netip.PrefixFrom(c.ProbeSNAT, c.ProbeSNAT.BitLen()))
	}
	return append(out, c.ExemptSources...)
}
