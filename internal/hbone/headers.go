package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Header names HBONE carries besides the pseudo-headers.
const (
	headerForwarded   = "forwarded"
	headerBaggage     = "baggage"
	headerTraceparent = "traceparent"
)

// parseAuthority parses a CONNECT :authority, which HBONE requires to be a
// literal IP address and a non-zero port ("10.0.0.1:8080", "[fd00::1]:80").
// Hostnames and IPv6 zones are refused: the destination must be an address
// the mesh can look up, not something resolved on the server's side.
func parseAuthority(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		return netip.AddrPort{}, fmt.Errorf("authority %q is not ip:port: %w", s, err)
	case ap.Addr().Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("authority %q has an IPv6 zone", s)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("authority %q has port 0", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// formatForwarded renders the Forwarded header (RFC 7239) naming src as the
// original client. IPv6 addresses are bracketed and quoted as the RFC asks.
func formatForwarded(src netip.Addr) string {
	if src.Is6() && !src.Is4In6() {
		return `for="[` + src.String() + `]"`
	}
	return "for=" + src.Unmap().String()
}

var errNoForwardedFor = errors.New("no for= parameter")

// parseForwarded returns the address in the for= parameter of the first
// element of a Forwarded header (RFC 7239), which is the original client.
// "unknown" and obfuscated identifiers ("_hidden") yield the zero Addr.
// It accepts what the RFC allows plus the unquoted IPv6 some senders use,
// and refuses anything else, since the value comes from the network.
func parseForwarded(v string) (netip.Addr, error) {
	var (
		addr  netip.Addr
		found bool
	)
	rest := v
	for {
		rest = trimOWS(rest)
		if rest == "" || rest[0] == ',' {
			break // end of the first element
		}
		if rest[0] == ';' {
			rest = rest[1:]
			continue
		}
		name, value, tail, err := forwardedPair(rest)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("forwarded header %q: %w", v, err)
		}
		rest = tail
		if !strings.EqualFold(name, "for") {
			continue
		}
		if found {
			return netip.Addr{}, fmt.Errorf("forwarded header %q: for= appears twice in one element", v)
		}
		found = true
		if addr, err = forwardedNode(value); err != nil {
			return netip.Addr{}, fmt.Errorf("forwarded header %q: %w", v, err)
		}
	}
	if !found {
		return netip.Addr{}, errNoForwardedFor
	}
	return addr, nil
}

// forwardedPair splits `token "=" value` off the front of s, unquoting a
// quoted-string value.
func forwardedPair(s string) (name, value, rest string, err error) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	if i == 0 || i == len(s) || s[i] != '=' {
		return "", "", "", errors.New("expected token=value")
	}
	name, s = s[:i], s[i+1:]
	if s != "" && s[0] == '"' {
		value, rest, err = unquote(s)
		return name, value, rest, err
	}
	i = 0
	for i < len(s) && (isTokenChar(s[i]) || s[i] == ':' || s[i] == '[' || s[i] == ']') {
		i++
	}
	if i == 0 {
		return "", "", "", fmt.Errorf("empty value for %s", name)
	}
	return name, s[:i], s[i:], nil
}

// unquote reads a quoted-string at the start of s (RFC 9110 5.6.4).
func unquote(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return b.String(), s[i+1:], nil
		case c == '\\' && i+1 < len(s) && isQuotedChar(s[i+1]):
			i++
			b.WriteByte(s[i])
		case isQuotedChar(c) && c != '\\':
			b.WriteByte(c)
		default:
			return "", "", fmt.Errorf("invalid byte %q in quoted string", c)
		}
	}
	return "", "", errors.New("unterminated quoted string")
}

// forwardedNode parses a node (RFC 7239 6): an IPv4 address or bracketed
// IPv6 address with an optional port, "unknown", or an obfuscated name.
func forwardedNode(node string) (netip.Addr, error) {
	switch {
	case strings.EqualFold(node, "unknown"), strings.HasPrefix(node, "_"):
		return netip.Addr{}, nil
	case strings.HasPrefix(node, "["):
		end := strings.IndexByte(node, ']')
		if end < 0 {
			return netip.Addr{}, fmt.Errorf("node %q: missing ]", node)
		}
		if tail := node[end+1:]; tail != "" && !validNodePort(tail) {
			return netip.Addr{}, fmt.Errorf("node %q: bad port", node)
		}
		return nodeAddr(node[1:end], true)
	case strings.Count(node, ":") > 1: // unquoted, unbracketed IPv6
		return nodeAddr(node, true)
	}
	host, port, hasPort := strings.Cut(node, ":")
	if hasPort && !validNodePort(":"+port) {
		return netip.Addr{}, fmt.Errorf("node %q: bad port", node)
	}
	return nodeAddr(host, false)
}

func nodeAddr(s string, want6 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("node %q: %w", s, err)
	}
	if a.Is6() != want6 || a.Zone() != "" {
		kind := "IPv4"
		if want6 {
			kind = "IPv6"
		}
		return netip.Addr{}, fmt.Errorf("node %q: not a plain %s address", s, kind)
	}
	return a.Unmap(), nil
}

// validNodePort reports whether s is ":" followed by a port number or an
// obfuscated port ("_abc").
func validNodePort(s string) bool {
	if len(s) < 2 || s[0] != ':' {
		return false
	}
	s = s[1:]
	if s[0] == '_' {
		return true
	}
	if len(s) > 5 {
		return false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

func trimOWS(s string) string { return strings.TrimLeft(s, " \t") }

// isTokenChar reports whether c is a tchar (RFC 9110 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotedChar reports whether c may appear (possibly escaped) in a
// quoted-string: HTAB, SP, visible ASCII and obs-text.
func isQuotedChar(c byte) bool { return c == '\t' || c >= 0x20 && c != 0x7f }
