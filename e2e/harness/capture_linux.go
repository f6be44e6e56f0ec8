package harness

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// Capture records every frame crossing one interface inside a network namespace (an
// AF_PACKET socket, no tcpdump needed), to prove what did or did not travel in clear.
type Capture struct {
	fd   int
	mu   sync.Mutex
	data [][]byte
	done chan struct{}
}

// StartCapture starts capturing on iface inside the network namespace at nsPath.
func StartCapture(nsPath, iface string) (*Capture, error) {
	h, err := netns.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	fd := -1
	err = h.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("capture on %s in %s: %w", iface, nsPath, err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	c := &Capture{fd: fd, done: make(chan struct{})}
	go c.read(fd)
	return c, nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func (c *Capture) read(fd int) {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			c.mu.Lock()
			stopped := c.fd < 0
			c.mu.Unlock()
			if stopped {
				return
			}
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		c.mu.Lock()
		c.data = append(c.data, bytes.Clone(buf[:n]))
		c.mu.Unlock()
	}
}

// Stop ends the capture and returns the frames seen.
func (c *Capture) Stop() [][]byte {
	c.mu.Lock()
	fd := c.fd
	c.fd = -1
	c.mu.Unlock()
	<-c.done
	unix.Close(fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.data
}

// TCPPorts counts IPv4 TCP frames by source and destination port.
func TCPPorts(frames [][]byte) map[uint16]int {
	ports := map[uint16]int{}
	for _, f := range frames {
		if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 || len(ip) < ihl+4 {
			continue
		}
		ports[binary.BigEndian.Uint16(ip[ihl:])]++
		ports[binary.BigEndian.Uint16(ip[ihl+2:])]++
	}
	return ports
}

// Contains reports whether any frame holds needle.
func Contains(frames [][]byte, needle []byte) bool {
	for _, f := range frames {
		if bytes.Contains(f, needle) {
			return true
		}
	}
	return false
}
