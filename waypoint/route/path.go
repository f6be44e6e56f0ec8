package route

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadPath is returned by NormalizePath for paths the proxy refuses
// (answered 400).
var ErrBadPath = errors.New("bad request path")

// NormalizePath normalizes an escaped request path (RFC 3986 6.2.2, as
// Istio's default BASE normalization does): percent-encoded unreserved
// characters are decoded, other escapes upper-cased, "." and ".." segments
// removed. Encoded slashes stay encoded and slashes are not merged, so
// "/a%2Fb" is one segment. Routing and authorization both see the result;
// the upstream receives it too, so what was checked is what is served.
func NormalizePath(escaped string) (string, error) {
	if escaped == "" {
		return "/", nil
	}
	if escaped[0] != '/' {
		return "", fmt.Errorf("%w: %q does not start with /", ErrBadPath, truncate(escaped))
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", fmt.Errorf("%w: bad percent escape in %q", ErrBadPath, truncate(escaped))
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			if isUnreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(escaped[i+1]))
				b.WriteByte(upperHex(escaped[i+2]))
			}
			i += 2
		case c < 0x21 || c == 0x7f || c == '#' || c == '?':
			return "", fmt.Errorf("%w: invalid byte %#x in %q", ErrBadPath, c, truncate(escaped))
		default:
			b.WriteByte(c)
		}
	}
	return removeDotSegments(b.String()), nil
}

// removeDotSegments is RFC 3986 5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	if !strings.Contains(p, "/.") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
