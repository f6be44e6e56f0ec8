package harness

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// TestPrivilegedCaptureSeesPlaintextAndPorts proves the capture can see what it is used
// to prove absent: a payload sent in clear, and the ports it used.
func TestPrivilegedCaptureSeesPlaintextAndPorts(t *testing.T) {
	privtest.Require(t)
	name := fmt.Sprintf("ambit-capture-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	path := "/run/netns/" + name
	c, err := StartCapture(path, "lo")
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ln, err := h.Listen(t.Context(), "127.0.0.1:15008", netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, s)
			s.Close()
		}
	}()
	conn, err := h.Dial(t.Context(), "127.0.0.1:15008", netns.SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("plaintext-canary-4242")
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, conn)
	conn.Close()
	frames := c.Stop()
	if !Contains(frames, payload) {
		t.Fatalf("capture of %d frames does not contain the clear payload", len(frames))
	}
	if TCPPorts(frames)[15008] == 0 {
		t.Fatalf("capture saw no TCP on port 15008: %v", TCPPorts(frames))
	}
	if Contains(frames, []byte("never-sent-canary")) {
		t.Fatal("Contains reports bytes that were never sent")
	}
}
