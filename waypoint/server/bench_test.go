package server_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/ambit-mesh/ambit/waypoint/model"
)

// BenchmarkHTTP1Through1KB measures 1 KiB HTTP/1.1 request/response
// exchanges through the waypoint over real HBONE on loopback (client
// tunnel in, upstream tunnel out), in parallel.
func BenchmarkHTTP1Through1KB(b *testing.B) {
	m := newMesh(b, func(c *serverConfig) { c.Logger = nil })
	payload := bytes.Repeat([]byte("x"), 1024)
	p := m.addPod("bench", "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(payload)
	}))
	m.update(&model.Snapshot{Services: []model.Service{service("echo", 1, model.HTTP)}, Workloads: []model.Workload{p.workload("echo")}})
	c := m.httpClient(vip(1), false)
	b.SetBytes(2 * 1024)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Post("http://echo/", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != 1024 {
				b.Errorf("got %d with %d bytes", resp.StatusCode, n)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
