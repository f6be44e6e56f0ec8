package hbone

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for an error
	}{
		{"10.0.0.1:80", "10.0.0.1:80"},
		{"[fd00::1]:443", "[fd00::1]:443"},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1:80"},
		{"10.0.0.1", ""},
		{"10.0.0.1:0", ""},
		{"10.0.0.1:65536", ""},
		{"example.com:80", ""},
		{"[fe80::1%eth0]:80", ""},
		{"fd00::1:80", ""},
		{"", ""},
		{" 10.0.0.1:80", ""},
	} {
		got, err := parseAuthority(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("parseAuthority(%q) = %v, want an error", tc.in, got)
		case tc.want != "" && (err != nil || got.String() != tc.want):
			t.Errorf("parseAuthority(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseForwarded(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // the address; "" for none
		wantErr bool
	}{
		{in: "for=10.0.0.1", want: "10.0.0.1"},
		{in: "For=10.0.0.1", want: "10.0.0.1"},
		{in: `for="10.0.0.1:4711"`, want: "10.0.0.1"},
		{in: `for="[2001:db8:cafe::17]"`, want: "2001:db8:cafe::17"},
		{in: `for="[2001:db8:cafe::17]:4711"`, want: "2001:db8:cafe::17"},
		{in: "for=2001:db8::1", want: "2001:db8::1"}, // unquoted, as some senders do
		{in: "for=192.0.2.43, for=198.51.100.17", want: "192.0.2.43"},
		{in: "proto=http;for=192.0.2.60;by=203.0.113.43", want: "192.0.2.60"},
		{in: "  for=10.0.0.1 ; proto=https", want: "10.0.0.1"},
		{in: `for="\"10.0.0.1\""`, wantErr: true},
		{in: "for=unknown"},
		{in: "for=_hidden"},
		{in: "for=_hidden:_port"},
		{in: `for="[::ffff:10.0.0.1]"`, want: "10.0.0.1"},
		{in: "by=10.0.0.1", wantErr: true}, // no for=
		{in: "", wantErr: true},
		{in: "for=10.0.0.1;for=10.0.0.2", wantErr: true},
		{in: "for=", wantErr: true},
		{in: "for", wantErr: true},
		{in: "=10.0.0.1", wantErr: true},
		{in: `for="10.0.0.1`, wantErr: true},
		{in: "for=10.0.0.1:99999", wantErr: true},
		{in: "for=[2001:db8::1", wantErr: true},
		{in: "for=[10.0.0.1]", wantErr: true},
		{in: "for=example.com", wantErr: true},
		{in: "for=fe80::1%eth0", wantErr: true},
		{in: "for=10.0.0.1 garbage", wantErr: true},
		{in: "for=\"10.0.0.1\x00\"", wantErr: true},
	} {
		got, err := parseForwarded(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseForwarded(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if want := addrOrZero(tc.want); err == nil && got != want {
			t.Errorf("parseForwarded(%q) = %v, want %v", tc.in, got, want)
		}
	}
}

func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func TestFormatForwardedRoundTrips(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"} {
		a := netip.MustParseAddr(s)
		got, err := parseForwarded(formatForwarded(a))
		if err != nil || got != a.Unmap() {
			t.Errorf("%s: formatted %q, parsed back %v, %v", s, formatForwarded(a), got, err)
		}
	}
}

func FuzzParseAuthority(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := parseAuthority(s)
		if err != nil {
			return
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
			t.Fatalf("parseAuthority(%q) = %v, which it should have refused", s, ap)
		}
		again, err := parseAuthority(ap.String())
		if err != nil || again != ap {
			t.Fatalf("parseAuthority(%q) = %v, which does not parse back: %v, %v", s, ap, again, err)
		}
	})
}

func FuzzParseForwarded(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseForwarded(s)
		if err != nil {
			return
		}
		if a.IsValid() && (a.Zone() != "" || a.Is4In6()) {
			t.Fatalf("parseForwarded(%q) = %v, not a plain address", s, a)
		}
		if a.IsValid() && !strings.Contains(strings.ToLower(s), "for") {
			t.Fatalf("parseForwarded(%q) = %v without a for= parameter", s, a)
		}
	})
}
