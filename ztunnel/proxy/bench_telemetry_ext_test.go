package proxy_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
	"github.com/ambit-mesh/ambit/ztunnel/telemetry"
)

// The benchmark's ztunnels keep the daemon's Prometheus metrics and write
// its JSON access lines, as cmd/ztunnel does, to a file rather than stderr.
func init() {
	proxy.NewBenchTelemetry = func(t testing.TB, tables *state.Tables) proxy.Observer {
		f, err := os.Create(filepath.Join(t.TempDir(), "access.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		log := slog.New(slog.NewJSONHandler(f, nil)).With("component", "access")
		rec, err := telemetry.NewRecorder(tables, log)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
}
