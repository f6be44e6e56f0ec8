package proxy_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ambit-mesh/ambit/internal/logging"
	"github.com/ambit-mesh/ambit/ztunnel/daemon"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
	"github.com/ambit-mesh/ambit/ztunnel/state"
	"github.com/ambit-mesh/ambit/ztunnel/telemetry"
)

// The benchmark's ztunnels keep the daemon's Prometheus metrics and write
// its JSON access lines, as cmd/ztunnel does (ztunnel/daemon), to a file
// rather than stderr.
func init() {
	proxy.TuneBenchProcess = func() {
		daemon.TuneGC()
		go daemon.ReleaseMemoryWhenQuiet(context.Background(), nil)
	}
	proxy.NewBenchTelemetry = func(t testing.TB, tables *state.Tables) proxy.Observer {
		f, err := os.Create(filepath.Join(t.TempDir(), "access.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		// As the daemon does: the lines are formatted and written by a
		// goroutine of their own.
		access := logging.NewAsync(slog.NewJSONHandler(f, nil).WithAttrs([]slog.Attr{slog.String("component", "access")}), 0)
		t.Cleanup(access.Close) // before the file closes
		rec, err := telemetry.NewRecorder(tables, slog.New(access))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
}
