package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/privtest"
)

// testNetns creates a throwaway network namespace with lo up and also holding
// 10.9.9.1, and removes it when the test ends.
func testNetns(t *testing.T) (string, *Handle) {
	t.Helper()
	privtest.Require(t)
	name := fmt.Sprintf("ambit-netns-test-%d", os.Getpid())
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	run(t, "ip", "-n", name, "addr", "add", "10.9.9.1/32", "dev", "lo")
	h, err := Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return name, h
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// serveOnce answers one connection with tag.
func serveOnce(t *testing.T, ln net.Listener, tag string) <-chan net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		_, _ = io.WriteString(c, tag)
		accepted <- c
	}()
	return accepted
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := io.ReadAtLeast(c, b, 1)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b[:n])
}

func TestPrivilegedListenerLivesInTheNamespace(t *testing.T) {
	_, h := testNetns(t)
	ctx := context.Background()
	ln, err := h.Listen(ctx, "10.9.9.1:0", SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	serveOnce(t, ln, "inside")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s from the host namespace succeeded; the listener leaked out of its namespace", addr)
	}
	c, err := h.Dial(ctx, addr, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readAll(t, c); got != "inside" {
		t.Fatalf("read %q, want inside", got)
	}
}

func TestPrivilegedReusePortAllowsTwoListeners(t *testing.T) {
	_, h := testNetns(t)
	ctx := context.Background()
	o := SocketOptions{ReusePort: true}
	a, err := h.Listen(ctx, "127.0.0.1:15001", o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := h.Listen(ctx, "127.0.0.1:15001", o)
	if err != nil {
		t.Fatalf("second SO_REUSEPORT listener: %v", err)
	}
	defer b.Close()
	if _, err := h.Listen(ctx, "127.0.0.1:15001", SocketOptions{}); err == nil {
		t.Fatal("a listener without SO_REUSEPORT bound a port two SO_REUSEPORT listeners hold")
	}
}

// TestPrivilegedOriginalDstAndMarkBypass redirects outbound TCP to a listener on 15001
// unless the socket carries the mark, as the pod rules do for ztunnel's own sockets.
func TestPrivilegedOriginalDstAndMarkBypass(t *testing.T) {
	name, h := testNetns(t)
	const mark = 0x539
	run(t, "nsenter", "--net=/run/netns/"+name, "--", "iptables", "-t", "nat", "-A", "OUTPUT",
		"-p", "tcp", "-m", "mark", "--mark", fmt.Sprint(mark), "-j", "RETURN")
	run(t, "nsenter", "--net=/run/netns/"+name, "--", "iptables", "-t", "nat", "-A", "OUTPUT",
		"-p", "tcp", "-d", "10.9.9.1", "--dport", "80", "-j", "REDIRECT", "--to-ports", "15001")
	ctx := context.Background()
	proxy, err := h.Listen(ctx, "0.0.0.0:15001", SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	app, err := h.Listen(ctx, "10.9.9.1:80", SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	redirected := serveOnce(t, proxy, "proxy")
	c, err := h.Dial(ctx, "10.9.9.1:80", SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readAll(t, c); got != "proxy" {
		t.Fatalf("unmarked connection reached %q, want the proxy", got)
	}
	pc := <-redirected
	if pc == nil {
		t.Fatal("proxy accepted nothing")
	}
	defer pc.Close()
	dst, err := OriginalDst(pc.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort("10.9.9.1:80"); dst != want {
		t.Fatalf("original destination %s, want %s", dst, want)
	}

	direct := serveOnce(t, app, "app")
	m, err := h.Dial(ctx, "10.9.9.1:80", SocketOptions{Mark: mark})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := readAll(t, m); got != "app" {
		t.Fatalf("marked connection reached %q, want the app (no redirect)", got)
	}
	if ac := <-direct; ac != nil {
		ac.Close()
	}
}

func TestPrivilegedDoReturnsToOwnNamespace(t *testing.T) {
	_, h := testNetns(t)
	before, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	if err := h.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == before {
		t.Fatalf("Do ran in %s, the caller's own namespace", inside)
	}
	for i := 0; i < 20; i++ { // whatever thread we land on now is back home
		if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != before {
			t.Fatalf("thread in %s after Do, want %s", now, before)
		}
	}
}

// BenchmarkPrivilegedDo is the fixed cost of running a function inside another
// namespace (two setns calls and a locked thread), which every inbound
// connection ztunnel dials into a pod pays.
func BenchmarkPrivilegedDo(b *testing.B) {
	privtest.Require(b)
	name := fmt.Sprintf("ambit-bench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v\n%s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := Open("/run/netns/" + name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	for b.Loop() {
		if err := h.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPrivilegedDialsFromOneSourceShareLocalPorts checks that a dial bound
// to a source address takes its port at connect, per destination, not at
// bind, unique for the address: with two local ports, three connections
// from one source to three destinations must all open. (ztunnel dials a
// pod's application from the client's address: ports picked at bind were
// slow to find with thousands in TIME_WAIT, and ran out across
// destinations.)
func TestPrivilegedDialsFromOneSourceShareLocalPorts(t *testing.T) {
	name, h := testNetns(t)
	run(t, "ip", "-n", name, "addr", "add", "10.9.9.2/32", "dev", "lo")
	run(t, "ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001")
	ctx := context.Background()
	ports := map[int]bool{}
	for i := range 3 {
		ln, err := h.Listen(ctx, fmt.Sprintf("10.9.9.1:%d", 9100+i), SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := serveOnce(t, ln, "hi")
		c, err := h.Dial(ctx, ln.Addr().String(), SocketOptions{Source: netip.MustParseAddr("10.9.9.2")})
		if err != nil {
			t.Fatalf("dial %d of 3 from one source with 2 local ports: %v", i+1, err)
		}
		defer c.Close()
		if got := readAll(t, c); got != "hi" {
			t.Fatalf("read %q", got)
		}
		if s := <-accepted; s != nil {
			defer s.Close()
		}
		local := c.LocalAddr().(*net.TCPAddr)
		if local.IP.String() != "10.9.9.2" {
			t.Errorf("dial %d left from %v, want 10.9.9.2", i+1, local)
		}
		ports[local.Port] = true
	}
	if len(ports) > 2 {
		t.Errorf("three dials used %d local ports out of a range of 2", len(ports))
	}
}

// TestPrivilegedNoKeepAliveTurnsOffGoDefault checks that NoKeepAlive leaves
// dialed and accepted sockets without SO_KEEPALIVE, which Go otherwise
// sets on both.
func TestPrivilegedNoKeepAliveTurnsOffGoDefault(t *testing.T) {
	_, h := testNetns(t)
	ctx := context.Background()
	for i, noKeepAlive := range []bool{false, true} {
		o := SocketOptions{NoKeepAlive: noKeepAlive}
		ln, err := h.Listen(ctx, fmt.Sprintf("10.9.9.1:%d", 9200+i), o)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := serveOnce(t, ln, "hi")
		c, err := h.Dial(ctx, ln.Addr().String(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := <-accepted
		if s == nil {
			t.Fatal("nothing accepted")
		}
		defer s.Close()
		want := 1
		if noKeepAlive {
			want = 0
		}
		for side, conn := range map[string]net.Conn{"dialed": c, "accepted": s} {
			if got := keepAliveOf(t, conn); got != want {
				t.Errorf("NoKeepAlive %v: %s socket has SO_KEEPALIVE %d, want %d", noKeepAlive, side, got, want)
			}
		}
	}
}

func keepAliveOf(t *testing.T, c net.Conn) int {
	t.Helper()
	v, err := getsockoptInt(c, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	if err != nil {
		t.Fatalf("SO_KEEPALIVE: %v", err)
	}
	return v
}

// withFD runs f on c's descriptor.
func withFD(c net.Conn, f func(fd int) error) error {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// socketNetnsInode is the inode of the network namespace c's socket
// belongs to (SIOCGSKNS), to compare with a namespace file's.
func socketNetnsInode(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := withFD(c, func(fd int) error {
		nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
		if err != nil {
			return err
		}
		defer unix.Close(nsfd)
		return unix.Fstat(nsfd, &st)
	}); err != nil {
		t.Fatalf("SIOCGSKNS: %v", err)
	}
	return st.Ino
}

func fileInode(t *testing.T, fd uintptr) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// Dial makes its socket in the namespace and connects it from any thread:
// concurrent dials reach a listener only the namespace has, each socket
// belongs to the namespace, and the dialing goroutines' threads are back
// home.
func TestPrivilegedDialMakesTheSocketInTheNamespace(t *testing.T) {
	_, h := testNetns(t)
	ln, err := h.Listen(context.Background(), "10.9.9.1:0", SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "in the namespace")
			c.Close()
		}
	}()
	home, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer home.Close()
	want, homeIno := fileInode(t, h.Fd()), fileInode(t, home.Fd())
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := h.Dial(ctx, ln.Addr().String(), SocketOptions{Mark: 0x539})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if got := socketNetnsInode(t, c); got != want {
				errs <- fmt.Errorf("socket in namespace %d, want %d", got, want)
				return
			}
			mark, err := getsockoptInt(c, unix.SOL_SOCKET, unix.SO_MARK)
			if err != nil || mark != 0x539 {
				errs <- fmt.Errorf("SO_MARK %#x, %w: options must apply to the namespace's socket", mark, err)
				return
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "in the namespace" {
				errs <- fmt.Errorf("read %q, %w", b, err)
				return
			}
			errs <- nil
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	now, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer now.Close()
	if fileInode(t, now.Fd()) != homeIno {
		t.Error("this thread is not in the process's namespace after the dials")
	}
}

func getsockoptInt(c net.Conn, level, opt int) (int, error) {
	var v int
	err := withFD(c, func(fd int) (err error) {
		v, err = unix.GetsockoptInt(fd, level, opt)
		return err
	})
	return v, err
}
