package daemon

import (
	"os"
	"runtime/debug"
)

// GCPercent is ztunnel's garbage collection target unless GOGC is set. At
// Go's default of 100 the heap may grow to twice what is live before a
// collection, and the runtime keeps those pages: with 10,000 idle tunnels
// a ztunnel's RSS was 66-70 MiB at 100 and 59-61 MiB at 50, for about twice
// as many collections of a heap of some 25 MiB while connections churn
// (BenchmarkPrivilegedZtunnelProcesses, docs/performance.md).
const GCPercent = 50

// TuneGC sets GCPercent unless the GOGC environment variable says
// otherwise. cmd/ztunnel calls it first thing.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
