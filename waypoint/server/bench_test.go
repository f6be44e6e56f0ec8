package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"testing"

	"github.com/ambit-mesh/ambit/waypoint/model"
	"github.com/ambit-mesh/ambit/waypoint/telemetry"
)

// BenchmarkHTTP1Through1KB measures 1 KiB HTTP/1.1 request/response
// exchanges through the waypoint over real HBONE on loopback (client
// tunnel in, upstream tunnel out), in parallel. Every party's goroutines
// carry a profiler label, so that a CPU profile splits by party:
//
//	go test -run '^$' -bench HTTP1Through1KB -cpuprofile cpu.out ./waypoint/server
//	go tool pprof -tagfocus party=waypoint -top cpu.out
func BenchmarkHTTP1Through1KB(b *testing.B) {
	m, _ := newEchoMesh(b)
	c := m.httpClient(vip(1), false)
	b.SetBytes(2 * 1024)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), clientParty))
		for pb.Next() {
			if err := post1KB(c, "http://echo/"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

var payload1KB = bytes.Repeat([]byte("x"), 1024)

// newEchoMesh starts a waypoint on loopback serving Service echo (VIP 1,
// HTTP) with one pod that reads the request body and answers 1 KiB. Access
// log and tracing are off, as in a waypoint without a collector: the
// tests' in-memory span exporter would keep every span.
func newEchoMesh(b *testing.B) (*mesh, *pod) {
	b.Helper()
	m := newMesh(b, newLoopback(), func(c *serverConfig) { c.Logger, c.Tracing = nil, telemetry.TracingConfig{} })
	p := m.addPod("bench", "echo", echo1KB())
	m.update(echoSnapshot(p))
	return m, p
}

// echo1KB reads the request body and answers 1 KiB.
func echo1KB() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(payload1KB)
	})
}

// echoSnapshot is Service echo (VIP 1, HTTP) with pod p behind it.
func echoSnapshot(p *pod) *model.Snapshot {
	return &model.Snapshot{Services: []model.Service{service("echo", 1, model.HTTP)}, Workloads: []model.Workload{p.workload("echo")}}
}

// post1KB sends 1 KiB to url and checks that 1 KiB comes back.
func post1KB(c *http.Client, url string) error {
	resp, err := c.Post(url, "application/octet-stream", bytes.NewReader(payload1KB))
	if err != nil {
		return err
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n != 1024 {
		return fmt.Errorf("got %d with %d bytes", resp.StatusCode, n)
	}
	return nil
}
