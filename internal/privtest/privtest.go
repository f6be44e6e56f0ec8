// Package privtest gates tests that need root (network namespaces, mounts, iptables,
// the local cluster). Without root they skip and say why; under `make test`
// (AMBIT_REQUIRE_PRIVILEGED=1) a missing privilege fails the test instead, so CI can
// never pass by skipping.
package privtest

import (
	"fmt"
	"os"
	"testing"
)

// EnvRequire is the variable `make test` sets to turn skips into failures.
const EnvRequire = "AMBIT_REQUIRE_PRIVILEGED"

// Required reports whether privileged tests must run rather than skip.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// Problem says why privileged tests cannot run here, or "" if they can.
func Problem() string {
	if os.Geteuid() != 0 {
		return fmt.Sprintf("needs root (euid %d)", os.Geteuid())
	}
	return ""
}

// Require skips t (or fails it under AMBIT_REQUIRE_PRIVILEGED=1) unless it can run
// privileged operations.
func Require(t testing.TB) {
	t.Helper()
	p := Problem()
	if p == "" {
		return
	}
	if Required() {
		t.Fatalf("privileged test cannot run: %s (%s=1 forbids skipping)", p, EnvRequire)
	}
	t.Skipf("privileged test skipped: %s; run as root, or `make test`", p)
}
