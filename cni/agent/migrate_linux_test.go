package agent

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/cni/netns/netnstest"
	ambitnetns "github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/privtest"
)

// TestPrivilegedListenerHandOverLosesNoQueuedConnection is a ztunnel restart's
// listener hand-over in a pod, with the kernel's part made visible: connections
// handshaken but not yet accepted, spread over an old and a new SO_REUSEPORT
// listener, then the old listener closes. In a namespace the agent enrolled
// (migrateListeners), the new listener gets every one of them; without the
// setting, those queued on the old listener are reset, which this test also
// checks so that it shows the setting is what makes the difference.
func TestPrivilegedListenerHandOverLosesNoQueuedConnection(t *testing.T) {
	privtest.Require(t)
	for _, tt := range []struct {
		name    string
		migrate bool
	}{{"enrolled pod", true}, {"without tcp_migrate_req", false}} {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t)
			if tt.migrate {
				if err := migrateListeners(ns.File); err != nil {
					t.Fatal(err)
				}
			}
			lost := handOver(t, ambitnetns.FromFile(dupFile(t, ns.File)), 32)
			switch {
			case tt.migrate && lost != 0:
				t.Errorf("%d of 32 queued connections reset when the old listener closed; want none", lost)
			case !tt.migrate && lost == 0:
				t.Error("no queued connection was reset without tcp_migrate_req: the test no longer shows what the setting does")
			}
			t.Logf("%d of 32 queued connections reset", lost)
		})
	}
}

// handOver opens two SO_REUSEPORT listeners in h, connects n clients (none accepted
// yet), closes the first listener, serves an echo on the second and returns how many
// clients got no echo.
func handOver(t *testing.T, h *ambitnetns.Handle, n int) (lost int) {
	t.Helper()
	defer h.Close()
	ctx := context.Background()
	opts := ambitnetns.SocketOptions{ReusePort: true}
	old, err := h.Listen(ctx, "127.0.0.1:15001", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	fresh, err := h.Listen(ctx, "127.0.0.1:15001", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	var clients []net.Conn
	for range n {
		c, err := h.Dial(ctx, "127.0.0.1:15001", ambitnetns.SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	old.Close()
	go func() {
		for {
			c, err := fresh.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.CopyN(c, c, 1)
			}()
		}
	}()
	for _, c := range clients {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1)
		if _, err := c.Write([]byte("x")); err != nil {
			lost++
			continue
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			lost++
		}
	}
	return lost
}

func dupFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	d, err := dup(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
