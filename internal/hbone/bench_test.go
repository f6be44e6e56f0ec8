package hbone

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkHBONEThroughput sends bulk data one way to a loopback TCP sink,
// first directly, then through an HBONE tunnel (TLS 1.3 and HTTP/2 to the
// server, which relays to the same sink, as ztunnel's inbound does), and
// reports both rates and their ratio.
func BenchmarkHBONEThroughput(b *testing.B) {
	received := make(chan int64, 1)
	up := tcpUpstream(b, func(c *net.TCPConn) {
		// Large reads: io.Discard would read 8 KiB at a time.
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		received <- n
	})
	e := newTestEnv(b, relayTo(up))
	direct, err := net.Dial("tcp", up.String())
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	tunnel := e.dial(b)
	defer tunnel.Close()
	buf := make([]byte, 256<<10)

	send := func(w io.Writer, closeWrite func() error) time.Duration {
		start := time.Now()
		for range b.N {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		closeWrite()
		if n := <-received; n != int64(b.N*len(buf)) {
			b.Fatalf("sink received %d bytes, want %d", n, b.N*len(buf))
		}
		return time.Since(start)
	}
	b.ResetTimer()
	tcpTime := send(direct, direct.(*net.TCPConn).CloseWrite)
	hboneTime := send(tunnel, tunnel.CloseWrite)
	b.StopTimer()

	mb := float64(b.N*len(buf)) / 1e6
	b.ReportMetric(mb/tcpTime.Seconds(), "tcp-MB/s")
	b.ReportMetric(mb/hboneTime.Seconds(), "hbone-MB/s")
	b.ReportMetric(tcpTime.Seconds()/hboneTime.Seconds(), "hbone/tcp")
}

// BenchmarkHBONEConnectLatency measures opening a connection and one
// one-byte round trip: directly over loopback TCP, through an HBONE tunnel
// on a pooled connection, and through a tunnel on a new connection (TCP,
// TLS handshake, HTTP/2 preface), all to the same echo server.
func BenchmarkHBONEConnectLatency(b *testing.B) {
	up := tcpUpstream(b, func(c *net.TCPConn) { io.Copy(c, c) })
	e := newTestEnv(b, relayTo(up))
	ctx := context.Background()
	ping := func(c io.ReadWriteCloser) {
		var one [1]byte
		if _, err := c.Write(one[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	var tcpTime, pooledTime, newTime time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		c, err := net.Dial("tcp", up.String())
		if err != nil {
			b.Fatal(err)
		}
		ping(c)
		tcpTime += time.Since(start)

		start = time.Now()
		st, err := e.client.Dial(ctx, e.request())
		if err != nil {
			b.Fatal(err)
		}
		ping(st)
		pooledTime += time.Since(start)

		fresh, err := NewClient(e.client.cfg)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		st, err = fresh.Dial(ctx, e.request())
		if err != nil {
			b.Fatal(err)
		}
		ping(st)
		newTime += time.Since(start)
		fresh.Close()
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(us(tcpTime), "tcp-µs")
	b.ReportMetric(us(pooledTime), "hbone-pooled-µs")
	b.ReportMetric(us(newTime), "hbone-new-conn-µs")
}
