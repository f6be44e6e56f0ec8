package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Handle is an open network namespace (a file descriptor for an nsfs file such as
// /run/netns/NAME or /proc/PID/ns/net). The caller owns it and closes it.
type Handle struct{ f *os.File }

// Open opens the network namespace at path.
func Open(path string) (*Handle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return &Handle{f: f}, nil
}

// FromFile takes ownership of f, an open network-namespace file (for example one
// received over a unix socket).
func FromFile(f *os.File) *Handle { return &Handle{f: f} }

// Close releases the namespace handle; sockets opened in it stay valid.
func (h *Handle) Close() error { return h.f.Close() }

// Fd is the namespace's file descriptor.
func (h *Handle) Fd() uintptr { return h.f.Fd() }

// ErrStuck reports that a thread could not return to its own namespace; the thread is
// discarded, but the operation did not happen.
var ErrStuck = errors.New("netns: could not restore the thread's namespace")

// Do runs fn on an OS thread switched into the network namespace open as f; f stays
// the caller's.
func Do(f *os.File, fn func() error) error { return (&Handle{f: f}).Do(fn) }

// home is the network namespace of every thread that is not inside Do: the
// process's own, which Do returns threads to. It is opened once, at package
// initialisation (on the main thread, before anything can have switched it),
// rather than per call: opening /proc/self/task/TID/ns/net cost about 45 us
// of the 190 us a ztunnel spent per inbound dial.
var home, homeErr = func() (*os.File, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("netns: open own namespace: %w", err)
	}
	return f, nil
}()

// Do runs f on an OS thread switched into h. f must not start goroutines that expect to
// be in h: only the calling thread is switched. The thread returns to the process's own
// namespace afterwards, so Do must not be called from a goroutine that has locked
// itself to a thread it moved into another namespace.
func (h *Handle) Do(f func() error) error {
	if homeErr != nil {
		return homeErr
	}
	runtime.LockOSThread()
	if err := unix.Setns(int(h.f.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter: %w", err)
	}
	ferr := f()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime destroys it when this goroutine exits
		// rather than scheduling other goroutines on a thread in the wrong namespace.
		return errors.Join(ferr, ErrStuck, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// SocketOptions are applied to sockets before they bind or connect.
type SocketOptions struct {
	// Mark sets SO_MARK, which the pod's redirection rules use to tell ztunnel's own
	// traffic from the application's (0 = unset).
	Mark uint32
	// ReusePort sets SO_REUSEPORT, so that a new ztunnel can bind the same listeners
	// before the old one stops accepting.
	ReusePort bool
	// Transparent sets IP_TRANSPARENT, so a dial may bind a non-local source address.
	Transparent bool
	// Source, when valid, is the local address a dial binds before connecting.
	Source netip.Addr
	// NoKeepAlive turns off the TCP keepalive Go turns on for every
	// connection it dials or accepts (a probe after 15 s idle, then every
	// 15 s): pointless when both ends are in one network namespace, and
	// with thousands of idle connections, hundreds of probes a second.
	NoKeepAlive bool
}

// keepAlive is the KeepAlive of a net.Dialer or net.ListenConfig for o.
func (o SocketOptions) keepAlive() time.Duration {
	if o.NoKeepAlive {
		return -1
	}
	return 0 // Go's default
}

func (o SocketOptions) control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if o.Mark != 0 {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); serr != nil {
				serr = fmt.Errorf("SO_MARK: %w", serr)
				return
			}
		}
		if o.ReusePort {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
				return
			}
		}
		if o.Transparent {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1); serr != nil {
				serr = fmt.Errorf("IP_TRANSPARENT: %w", serr)
				return
			}
		}
		if o.Source.IsValid() {
			// A dial from a given address binds it with port 0 before
			// connecting. Without this the kernel picks the port at bind,
			// unique for the address whatever the destination, searching
			// every port in use or in TIME_WAIT: at 1,000 new connections
			// a second that search took most of ztunnel's CPU and the
			// ports of one client address run out at about 28,000
			// connections in 60 s. With it the port is picked at connect,
			// for the whole 4-tuple (Linux 4.2+; older kernels refuse the
			// option and keep the old behaviour).
			_ = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Listen opens a TCP listener on addr inside h.
func (h *Handle) Listen(ctx context.Context, addr string, o SocketOptions) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		lc := net.ListenConfig{Control: o.control, KeepAlive: o.keepAlive()}
		var err error
		ln, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in netns: %w", addr, err)
	}
	return ln, nil
}

// Dial opens a TCP connection to addr from inside h. Only the socket is
// made in h (a socket belongs to the namespace it was created in, whatever
// thread uses it later): the connect and its wait happen on any thread, as
// every other dial's do. A dial that waited for its connect on a thread
// locked in h kept that thread from the scheduler meanwhile; under a
// thousand new connections a second the runtime started threads to make up
// for them (35 in a ztunnel that needed 10), and each wake-up of such a dial
// was a hand-off to its own thread.
func (h *Handle) Dial(ctx context.Context, addr string, o SocketOptions) (net.Conn, error) {
	d := net.Dialer{KeepAlive: o.keepAlive(), Control: func(network, address string, c syscall.RawConn) error {
		if err := h.swapSocket(c); err != nil {
			return err
		}
		return o.control(network, address, c)
	}}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s in netns: %w", addr, err)
	}
	return conn, nil
}

// swapSocket replaces the socket behind c, which the runtime has just made
// in this thread's namespace and not yet bound, connected or registered
// with its poller (net.Dialer.Control runs in between), with one of the
// same family made in h: dup3 puts the new socket under the same
// descriptor number, so the runtime goes on with it unaware.
func (h *Handle) swapSocket(c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		var domain int
		if domain, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
			err = fmt.Errorf("SO_DOMAIN: %w", err)
			return
		}
		var ns int
		err = h.Do(func() error {
			var serr error
			ns, serr = unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			return serr
		})
		if err != nil {
			err = fmt.Errorf("socket in netns: %w", err)
			return
		}
		defer unix.Close(ns)
		if domain == unix.AF_INET6 {
			// As the runtime sets it on its own sockets for a "tcp" dial.
			if err = unix.SetsockoptInt(ns, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				err = fmt.Errorf("IPV6_V6ONLY: %w", err)
				return
			}
		}
		if err = unix.Dup3(ns, int(fd), unix.O_CLOEXEC); err != nil {
			err = fmt.Errorf("dup3: %w", err)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// OriginalDst returns the destination a redirected (iptables REDIRECT/DNAT) IPv4 TCP
// connection was addressed to before redirection (SO_ORIGINAL_DST).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var addr unix.RawSockaddrInet4
	var serr error
	err = rc.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(addr))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
			uintptr(unsafe.Pointer(&addr)), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	port := uint16(addr.Port>>8) | uint16(addr.Port&0xff)<<8 // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(addr.Addr), port), nil
}
