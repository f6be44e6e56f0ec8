package daemon

import (
	"os"
	"runtime/debug"
)

// GCPercent is ztunnel's garbage collection target unless GOGC is set.
// Between collections the heap grows by this share of what is live, and
// the garbage made meanwhile is interleaved with the objects that stay: a
// burst of new connections leaves spans half full of tunnels for good (Go
// does not move objects). With 10,000 idle tunnels a ztunnel's RSS was
// 66-70 MiB at Go's default of 100; since idle sockets leave the net
// package it is 42.5-43.9 MiB at 50, 40.2-41.0 at 25 and 38.9-39.0 at 10
// (free slots in spans 6.4-7.6, 4.2-4.6 and 3.2-3.3 MiB). A collection
// marks the live heap (13 MiB at 10,000 tunnels), so at 10 they are five
// times as frequent as at 50 while connections churn; at 1,000 new
// connections/s each ztunnel used 49-57% of a core at all three settings
// (BenchmarkPrivilegedZtunnelProcesses), and throughput and latency on a
// persistent connection did not move (docs/performance.md).
const GCPercent = 10

// TuneGC sets GCPercent unless the GOGC environment variable says
// otherwise. cmd/ztunnel calls it first thing.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
