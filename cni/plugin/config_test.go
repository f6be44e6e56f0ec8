package plugin

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode uint
		check    func(*testing.T, *Config)
	}{
		{name: "defaults", in: `{"cniVersion":"1.0.0","name":"n","type":"ambit-cni"}`, check: func(t *testing.T, c *Config) {
			if c.AgentSocket != DefaultAgentSocket || c.Timeout() != DefaultTimeout || len(c.ExcludeNamespaces) != 1 {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "explicit", in: `{"cniVersion":"0.4.0","name":"n","type":"ambit-cni","agentSocket":"/s","timeoutSeconds":3,"excludeNamespaces":[]}`,
			check: func(t *testing.T, c *Config) {
				if c.AgentSocket != "/s" || c.Timeout().Seconds() != 3 || len(c.ExcludeNamespaces) != 0 {
					t.Errorf("config = %+v", c)
				}
			}},
		{name: "not json", in: `{`, wantCode: types.ErrDecodingFailure},
		{name: "wrong type", in: `{"cniVersion":"1.0.0","timeoutSeconds":"soon"}`, wantCode: types.ErrDecodingFailure},
		{name: "no version", in: `{"name":"n"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad version", in: `{"cniVersion":"x.y"}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "negative timeout", in: `{"cniVersion":"1.0.0","timeoutSeconds":-1}`, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad prevResult", in: `{"cniVersion":"1.0.0","prevResult":{"ips":"no"}}`, wantCode: types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				return
			}
			var cerr *types.Error
			if !errors.As(err, &cerr) || cerr.Code != tt.wantCode {
				t.Fatalf("ParseConfig() = %v, want CNI error %d", err, tt.wantCode)
			}
		})
	}
}

// FuzzParseConfig: any input gives a config or a CNI error object, never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ambit-cni","agentSocket":"/var/run/ambit/cni.sock"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`))
	f.Add([]byte(`{"cniVersion":"0.3.1","prevResult":{"ips":[{"version":"4","address":"10.0.0.2/24"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			var cerr *types.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v is not a CNI error", err)
			}
			return
		}
		if c.AgentSocket == "" {
			t.Fatal("no agent socket after defaults")
		}
	})
}
