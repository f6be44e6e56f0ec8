package privtest

import (
	"os"
	"testing"
)

func TestProblemMatchesEffectiveUID(t *testing.T) {
	got := Problem()
	if os.Geteuid() == 0 && got != "" {
		t.Fatalf("root: Problem() = %q, want empty", got)
	}
	if os.Geteuid() != 0 && got == "" {
		t.Fatal("non-root: Problem() is empty, want a reason")
	}
}

func TestRequiredFollowsEnvironment(t *testing.T) {
	t.Setenv(EnvRequire, "1")
	if !Required() {
		t.Fatal("Required() = false with AMBIT_REQUIRE_PRIVILEGED=1")
	}
	t.Setenv(EnvRequire, "")
	if Required() {
		t.Fatal("Required() = true with AMBIT_REQUIRE_PRIVILEGED unset")
	}
}
