// Package netnstest creates throwaway network namespaces for privileged tests.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

var seq atomic.Int64

// NS is a named network namespace (under /run/netns) that a test owns.
type NS struct {
	Name string
	// File is the open namespace; it stays open until the test ends.
	File *os.File
}

// New creates a network namespace named after the test binary's pid, with lo up, and
// deletes it when t ends.
func New(t testing.TB) *NS {
	t.Helper()
	name := fmt.Sprintf("ambit-t%d-%d", os.Getpid(), seq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ns := &NS{Name: name, File: f}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside ns and returns its output; failure fails t.
func (ns *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Fd is the namespace's file descriptor.
func (ns *NS) Fd() int { return int(ns.File.Fd()) }

// Run runs a command and returns its output; failure fails t.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Link connects a and b with a veth pair, addresses aAddr and bAddr (CIDR notation).
func Link(t testing.TB, a *NS, aAddr string, b *NS, bAddr string) {
	t.Helper()
	Run(t, "ip", "link", "add", "eth0", "netns", a.Name, "type", "veth", "peer", "name", "eth0", "netns", b.Name)
	a.Run(t, "ip", "addr", "add", aAddr, "dev", "eth0")
	a.Run(t, "ip", "link", "set", "eth0", "up")
	b.Run(t, "ip", "addr", "add", bAddr, "dev", "eth0")
	b.Run(t, "ip", "link", "set", "eth0", "up")
}
