package server

import (
	"strings"
	"testing"
)

func TestDefaultConfigIsValidWithAPodName(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PodName = "istiod-lite-0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateSaysWhatIsWrong(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"leader election without pod name", func(c *Config) { c.PodName = "" }, "POD_NAME"},
		{"bad trust domain", func(c *Config) { c.TrustDomain = "spiffe://x" }, "trust domain"},
		{"bad node proxy", func(c *Config) { c.NodeProxies = []string{"ztunnel"} }, "namespace/serviceaccount"},
		{"ttl above max", func(c *Config) { c.CertTTL = c.MaxCertTTL * 2 }, "certificate TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PodName = "p"
			tt.mutate(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
