package hbone

import (
	"io"
	"net"
	"testing"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

func TestRelayBetweenSocketsPropagatesHalfClose(t *testing.T) {
	// client <-> (in  relay out) <-> upstream, all TCP: the splice path.
	client, in := tcpPair(t)
	out, upstream := tcpPair(t)
	type result struct {
		aToB, bToA int64
		err        error
	}
	done := make(chan result, 1)
	go func() {
		aToB, bToA, err := Relay(in, out)
		done <- result{aToB, bToA, err}
	}()

	io.WriteString(client, "request")
	client.CloseWrite()
	got, err := io.ReadAll(upstream) // EOF arrives only through CloseWrite
	if err != nil || string(got) != "request" {
		t.Fatalf("upstream read %q, %v", got, err)
	}
	io.WriteString(upstream, "response!")
	upstream.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "response!" {
		t.Fatalf("client read %q, %v", got, err)
	}
	r := <-done
	if r.err != nil || r.aToB != 7 || r.bToA != 9 {
		t.Fatalf("Relay = %d, %d, %v; want 7, 9, nil", r.aToB, r.bToA, r.err)
	}
}
