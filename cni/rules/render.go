package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Ruleset is one nftables table plus the policy routing that goes with it, as the
// kernel will hold it. String renders it the way `nft list table` and `ip rule` print
// it, which is what golden files and the privileged tests compare.
type Ruleset struct {
	Family nftables.TableFamily
	Chains []Chain
	// Set, if non-nil, is a set of IPv4 addresses the chains look up.
	Set *AddrSet
	// Route, if non-nil, is policy routing installed next to the table.
	Route *PolicyRoute
}

// AddrSet is a named set of IPv4 addresses.
type AddrSet struct {
	Name  string
	Addrs []netip.Addr
}

// PolicyRoute is `ip rule add fwmark Mark/Mask lookup Table priority Priority` plus
// `ip route add local default dev lo table Table`.
type PolicyRoute struct {
	Mark, Mask uint32
	Table      int
	Priority   int
}

// Chain is a base chain.
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	Rules    []Rule
}

// Rule is one nftables rule: its expressions and how nft prints them.
type Rule struct {
	Text  string
	Exprs []expr.Any
}

// PodRuleset is the redirection inside an enrolled pod's network namespace:
//   - outbound TCP not from ztunnel (mark ZtunnelMark) and not to loopback -> OutboundPort;
//   - inbound TCP not to InboundHBONEPort and not from an exempt source -> InboundPlaintextPort;
//   - optionally DNS -> DNSPort;
//   - connections ztunnel opens inside the pod get ConnMark, their replies the packet
//     mark, which policy routing delivers to the local (transparent) socket.
func PodRuleset(c Config) Ruleset {
	mangle := nftables.ChainPriorityMangle
	dstnat := nftables.ChainPriorityNATDest
	var inbound []Rule
	for _, p := range c.exempt() {
		inbound = append(inbound, rule(saddr(p), accept()))
	}
	inbound = append(inbound,
		rule(tcpDport(c.InboundHBONEPort), accept()),
		rule(l4proto(unix.IPPROTO_TCP), redirect(c.InboundPlaintextPort)),
	)
	outbound := []Rule{
		rule(markIs(ZtunnelMark, MarkMask), accept()),
		rule(oifname("lo"), accept()),
	}
	if c.RedirectDNS {
		outbound = append(outbound,
			rule(udpDport(53), redirect(c.DNSPort)),
			rule(tcpDport(53), redirect(c.DNSPort)),
		)
	}
	outbound = append(outbound, rule(l4proto(unix.IPPROTO_TCP), redirect(c.OutboundPort)))
	return Ruleset{
		Family: nftables.TableFamilyINet,
		Chains: []Chain{
			{Name: "mangle-prerouting", Type: nftables.ChainTypeFilter, Hook: nftables.ChainHookPrerouting, Priority: mangle,
				Rules: []Rule{rule(markIs(ZtunnelMark, MarkMask), setCtMark(ConnMark))}},
			{Name: "mangle-output", Type: nftables.ChainTypeRoute, Hook: nftables.ChainHookOutput, Priority: mangle,
				Rules: []Rule{rule(ctMarkIs(ConnMark), setMark(ConnMark))}},
			{Name: "nat-prerouting", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPrerouting, Priority: dstnat, Rules: inbound},
			{Name: "nat-output", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookOutput, Priority: dstnat, Rules: outbound},
		},
		Route: &PolicyRoute{Mark: ConnMark, Mask: MarkMask, Table: RouteTable, Priority: RulePriority},
	}
}

// HostRuleset is the node side: TCP the node itself originates (kubelet probes) to an
// enrolled pod gets source address c.ProbeSNAT, which the pod exempts from capture.
// Forwarded traffic (other pods, other nodes) is untouched. It is nil-safe to apply
// with no pods. It returns false when c disables the rewrite.
func HostRuleset(c Config, pods []netip.Addr) (Ruleset, bool) {
	if !c.ProbeSNAT.IsValid() {
		return Ruleset{}, false
	}
	var v4 []netip.Addr
	for _, a := range pods {
		if a.Unmap().Is4() {
			v4 = append(v4, a.Unmap())
		}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	v4 = slices.Compact(v4)
	set := &AddrSet{Name: ProbeSetName, Addrs: v4}
	return Ruleset{
		Family: nftables.TableFamilyIPv4,
		Set:    set,
		Chains: []Chain{{
			Name: "postrouting", Type: nftables.ChainTypeNAT, Hook: nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource,
			Rules:    []Rule{rule(daddrInSet(set.Name), l4proto(unix.IPPROTO_TCP), saddrLocal(), snat(c.ProbeSNAT))},
		}},
	}, true
}

// String renders r as `nft list table` followed by `ip rule` and `ip route` would.
func (r Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", familyName(r.Family), TableName)
	if r.Set != nil {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n", r.Set.Name)
		if len(r.Set.Addrs) > 0 {
			addrs := make([]string, len(r.Set.Addrs))
			for i, a := range r.Set.Addrs {
				addrs[i] = a.String()
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(addrs, ", "))
		}
		b.WriteString("\t}\n")
		if len(r.Chains) > 0 {
			b.WriteString("\n")
		}
	}
	for i, c := range r.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n",
			c.Name, c.Type, hookName(*c.Hook), priorityName(*c.Hook, *c.Priority))
		for _, rl := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", rl.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	if r.Route != nil {
		b.WriteString(r.Route.String())
	}
	return b.String()
}

// String renders p as `ip rule show` and `ip route show table T` print it.
func (p PolicyRoute) String() string {
	return fmt.Sprintf("ip rule: %d:\tfrom all fwmark %#x/%#x lookup %d\nip route table %d: local default dev lo scope host\n",
		p.Priority, p.Mark, p.Mask, p.Table, p.Table)
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family-%d", f)
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	case *nftables.ChainHookInput:
		return "input"
	}
	return fmt.Sprint(uint32(h))
}

// priorityName is how nft names a priority; it knows "dstnat" only at prerouting.
func priorityName(h nftables.ChainHook, p nftables.ChainPriority) string {
	switch {
	case p == *nftables.ChainPriorityNATDest && h != *nftables.ChainHookPrerouting:
		return fmt.Sprint(int32(p))
	}
	switch p {
	case *nftables.ChainPriorityMangle:
		return "mangle"
	case *nftables.ChainPriorityNATDest:
		return "dstnat"
	case *nftables.ChainPriorityNATSource:
		return "srcnat"
	case *nftables.ChainPriorityFilter:
		return "filter"
	}
	return fmt.Sprint(int32(p))
}

// A part is one match or statement of a rule: its text and expressions.
type part struct {
	text  string
	exprs []expr.Any
}

func rule(parts ...part) Rule {
	var r Rule
	texts := make([]string, len(parts))
	for i, p := range parts {
		texts[i] = p.text
		r.Exprs = append(r.Exprs, p.exprs...)
	}
	r.Text = strings.Join(texts, " ")
	return r
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func accept() part {
	return part{"accept", []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
}

func l4proto(proto byte) part {
	name := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[proto]
	return part{"meta l4proto " + name, l4protoExprs(proto)}
}

func l4protoExprs(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func dport(proto byte, name string, port uint16) part {
	return part{fmt.Sprintf("%s dport %d", name, port), append(l4protoExprs(proto),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
	)}
}

func tcpDport(port uint16) part { return dport(unix.IPPROTO_TCP, "tcp", port) }
func udpDport(port uint16) part { return dport(unix.IPPROTO_UDP, "udp", port) }

// saddr matches a source prefix in an inet table (with the family dependency nft adds).
func saddr(p netip.Prefix) part {
	p = p.Masked()
	text := "ip saddr " + p.Addr().String()
	nfproto, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if p.Addr().Is6() {
		text = "ip6 saddr " + p.Addr().String()
		nfproto, off = unix.NFPROTO_IPV6, 8
	}
	if p.Bits() != p.Addr().BitLen() {
		text += fmt.Sprintf("/%d", p.Bits())
	}
	addr := p.Addr().AsSlice()
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(addr))},
	}
	if p.Bits() != p.Addr().BitLen() {
		mask := netip.PrefixFrom(p.Addr(), p.Bits())
		exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)),
			Mask: prefixMask(mask), Xor: make([]byte, len(addr))})
	}
	exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
	return part{text, exprs}
}

func prefixMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func markIs(mark, mask uint32) part {
	return part{fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mask, mark), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}}
}

func ctMarkIs(mark uint32) part {
	return part{fmt.Sprintf("ct mark 0x%08x", mark), []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}}
}

func setMark(mark uint32) part {
	return part{fmt.Sprintf("meta mark set 0x%08x", mark), []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}}
}

func setCtMark(mark uint32) part {
	return part{fmt.Sprintf("ct mark set 0x%08x", mark), []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1},
	}}
}

func oifname(name string) part {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return part{fmt.Sprintf("oifname %q", name), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}}
}

func redirect(port uint16) part {
	return part{fmt.Sprintf("redirect to :%d", port), []expr.Any{
		&expr.Immediate{Register: 1, Data: be16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}}
}

func daddrInSet(name string) part {
	return part{"ip daddr @" + name, []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: name},
	}}
}

func saddrLocal() part {
	return part{"fib saddr type local", []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}}
}

func snat(a netip.Addr) part {
	return part{"snat to " + a.String(), []expr.Any{
		&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}}
}
