// Package e2e holds the end-to-end tests that run on the local cluster (`make test`).
package e2e

import (
	"testing"

	"github.com/ambit-mesh/ambit/e2e/harness"
)

// cl is the cluster every test in this package runs against; TestMain sets it.
var cl *harness.Cluster

func TestMain(m *testing.M) { harness.Main(m, &cl) }
