package main

import (
	"strings"
	"testing"
)

func TestParseFlagsTakesTheNodeFromTheEnvironment(t *testing.T) {
	env := map[string]string{"NODE_NAME": "ambit-node-1"}
	cfg, err := parseFlags(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "ambit-node-1" || cfg.Socket() != "/var/run/ambit/ambit-node-1/ztunnel.sock" ||
		cfg.ControlPlane != "istiod-lite.istio-system.svc:15012" || cfg.NodeID() != "ztunnel~ambit-node-1" {
		t.Errorf("config: %+v", cfg)
	}
}

func TestParseFlagsRejectsBadConfig(t *testing.T) {
	none := func(string) string { return "" }
	for _, args := range [][]string{
		{},                                      // no node
		{"-node-name=n", "-control-plane=nope"}, // no port
		{"-node-name=n", "-token=relative"},
		{"-node-name=n", "-log-level=loud"},
		{"-node-name=n", "extra"},
	} {
		if _, err := parseFlags(args, none); err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
		}
	}
}
