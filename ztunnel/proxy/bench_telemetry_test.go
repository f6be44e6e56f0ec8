package proxy

import (
	"testing"

	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// NewBenchTelemetry, when set, makes the observer the benchmark's ztunnels
// report to: the daemon's own metrics and access log (ztunnel/telemetry), so
// that the benchmark measures their per-connection cost too. It is set by
// bench_telemetry_ext_test.go in package proxy_test, which can import
// ztunnel/telemetry (telemetry imports this package).
var NewBenchTelemetry func(t testing.TB, tables *state.Tables) Observer

// TuneBenchProcess, when set, tunes the runtime of a ztunnel child of
// BenchmarkPrivilegedZtunnelProcesses as cmd/ztunnel does (daemon.TuneGC);
// set by bench_telemetry_ext_test.go, as NewBenchTelemetry is.
var TuneBenchProcess func()

// benchTelemetry is NewBenchTelemetry while a benchmark wants it, and nil
// for the tests, whose counters must see only their own connections.
var benchTelemetry func(t testing.TB, tables *state.Tables) Observer

// teeObserver reports to every observer in turn.
type teeObserver []Observer

func (o teeObserver) Opened(c *ConnInfo) {
	for _, x := range o {
		x.Opened(c)
	}
}

func (o teeObserver) Progress(c *ConnInfo, b Bytes) {
	for _, x := range o {
		x.Progress(c, b)
	}
}

func (o teeObserver) Closed(c *ConnInfo, total, unreported Bytes, err error) {
	for _, x := range o {
		x.Closed(c, total, unreported, err)
	}
}

func (o teeObserver) Refused(c *ConnInfo, reason error) {
	for _, x := range o {
		x.Refused(c, reason)
	}
}
