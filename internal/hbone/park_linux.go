package hbone

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/shrink"
)

// sockHalf is a Bridge direction reading a socket: a goroutine copies
// while data flows and parks the socket when it has been idle for the
// Bridge's linger.
type sockHalf struct {
	br   *Bridge
	i    int
	dst  io.Writer
	src  *heldSock
	park parkEntry
}

// newSockHalf returns the direction copying src to dst if src is a socket
// the parker can watch (holdSocket made it), else nil.
func newSockHalf(br *Bridge, i int, dst io.Writer, src io.Reader) *sockHalf {
	hs, ok := src.(*heldSock)
	if !ok {
		return nil
	}
	h := &sockHalf{br: br, i: i, dst: dst, src: hs}
	h.park = parkEntry{rc: (*heldRaw)(hs), resume: h} // an interface: no closure to allocate
	hs.mu.Lock()
	hs.park = &h.park
	hs.mu.Unlock()
	return h
}

// run copies until the source ends or fails, or has been idle for a whole
// linger period, and then parks it: the parker calls run again.
func (h *sockHalf) run() {
	for {
		n, err := h.copy()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			h.br.halfDone(h.i, h.dst, err)
			return
		}
		if n == 0 {
			h.src.detach() // unless the other direction is writing to it
			if idleParker.park(&h.park) {
				return
			}
		}
	}
}

// copy copies from the socket until it ends or fails, or nothing came for
// a linger period, with the socket (and dst, if it is one too) attached.
func (h *sockHalf) copy() (int64, error) {
	c, err := h.src.use()
	if err != nil {
		return 0, err
	}
	defer h.src.done()
	dst, dh, err := acquire(h.dst)
	if err != nil {
		return 0, err
	}
	if dh != nil {
		defer dh.done()
	}
	// The deadline ends the copy when nothing came for a period. It fails
	// only on a closed socket, which the copy reports.
	_ = c.SetReadDeadline(time.Now().Add(h.br.linger))
	return copyIdle(dst, c, &h.br.n[h.i])
}

// unpark resumes the direction if it is parked; its socket must be closed
// already, so that it cannot park again.
func (h *sockHalf) unpark() {
	if idleParker.take(&h.park) {
		go h.run()
	}
}

// ParkedSockets reports how many idle sockets the process's parker is
// watching.
func ParkedSockets() int {
	return idleParker.count()
}

// idleParker is the process's parker: like the runtime's netpoller, one
// epoll instance serves every idle socket of the process.
var idleParker parker

const (
	// parkTick bounds an epoll_wait, so that the parker's goroutine exits
	// (within a tick) once nothing is parked, and sweeps.
	parkTick = time.Second
	// sweepEvery is how often the parker looks for parked sockets closed
	// behind its back (which epoll forgets silently) and resumes them, and
	// detaches the parked sockets still in the net package (heldSock):
	// those the other direction was writing to as they parked; the others
	// leave as they park.
	sweepEvery = 5 * time.Second
	parkEvents = 128 // events per epoll_wait
)

// parker watches idle sockets, one epoll instance for all, and resumes a
// socket's copy in a new goroutine when it becomes readable. Its goroutine
// runs only while something is parked. Sockets stay registered with the
// runtime's netpoller too; the parker never reads or closes them, and
// touches a descriptor only inside syscall.RawConn.Control, so a
// concurrent Close cannot make it act on a reused descriptor number.
type parker struct {
	mu        sync.Mutex
	epfd      int   // created on first use and kept, like the runtime's own
	err       error // why the parker does not work; parking is then refused
	running   bool  // the epoll_wait goroutine
	nextID    uint64
	parked    map[uint64]*parkEntry
	peak      int  // parked's largest size since it was last rebuilt (shrink.Map)
	detaching bool // a goroutine is detaching the sockets a sweep found
	// keepAttached turns detaching off (tests that close a socket behind
	// the Bridge's back).
	keepAttached atomic.Bool
}

// parkEntry is a parkable socket; the same entry serves all its parkings.
type parkEntry struct {
	id         uint64 // epoll data; set at the first park
	rc         syscall.RawConn
	resume     interface{ run() }
	registered atomic.Bool // in the epoll interest list, armed or not
	// moved: the registration was taken off a descriptor that is going
	// away and is to be put on the socket's next one (heldSock; guarded by
	// its mu).
	moved bool
}

// park hands e's socket to the parker, which calls e.resume.run in a new
// goroutine when the socket becomes readable (data, FIN, error) or is
// found closed, or when take takes it back. park returns false when it
// could not park the socket (closed, or the parker is broken): the caller
// still owns it.
func (p *parker) park(e *parkEntry) bool {
	p.mu.Lock()
	if p.parked == nil && p.err == nil {
		p.epfd, p.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if p.err != nil {
			p.err = fmt.Errorf("hbone: parker: epoll_create1: %w", p.err)
		} else {
			p.parked = make(map[uint64]*parkEntry)
		}
	}
	if p.err != nil {
		p.mu.Unlock()
		return false
	}
	if e.id == 0 {
		p.nextID++
		e.id = p.nextID
	}
	p.parked[e.id] = e
	p.parked = shrink.Map(p.parked, &p.peak)
	if !p.running {
		p.running = true
		go p.loop()
	}
	epfd := p.epfd
	p.mu.Unlock()
	// Armed outside the lock: the entry is in the map first, so that an
	// event (the socket may be readable already) or take finds it.
	if arm(epfd, e) == nil {
		return true
	}
	// Not armed, so no event will come: the socket is ours again, unless
	// take (a close) has already taken it and resumed it.
	return !p.take(e)
}

// arm registers e's socket with epfd for one readiness event.
func arm(epfd int, e *parkEntry) error {
	var err error
	cerr := e.rc.Control(func(fd uintptr) {
		op := unix.EPOLL_CTL_ADD
		if e.registered.Load() { // disarmed by its last event: re-arm
			op = unix.EPOLL_CTL_MOD
		}
		err = epollCtl(epfd, op, int(fd), e)
		switch {
		case errors.Is(err, unix.EEXIST):
			err = epollCtl(epfd, unix.EPOLL_CTL_MOD, int(fd), e)
		case errors.Is(err, unix.ENOENT):
			err = epollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), e)
		}
		if err == nil {
			e.registered.Store(true)
		}
	})
	return cmp.Or(cerr, err)
}

// epollCtl adds or modifies fd's registration for e, armed for one
// readiness event.
func epollCtl(epfd, op, fd int, e *parkEntry) error {
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
		Fd:     int32(uint32(e.id)),
		Pad:    int32(uint32(e.id >> 32)),
	}
	return unix.EpollCtl(epfd, op, fd, &ev)
}

// epollFD is the parker's epoll instance. It is set before the first
// registration and never changes: whoever has seen an entry registered
// may read it without the lock.
func (p *parker) epollFD() int { return p.epfd }

// take removes e from the parker if it is parked and reports whether it
// did: the caller then resumes it. A socket closed while parked has left
// the epoll interest list with the close.
func (p *parker) take(e *parkEntry) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.id == 0 || p.parked[e.id] != e {
		return false
	}
	delete(p.parked, e.id)
	p.parked = shrink.Map(p.parked, &p.peak)
	return true
}

func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// loop waits for parked sockets to become readable and resumes them. It
// exits once a tick passes with nothing parked.
func (p *parker) loop() {
	events := make([]unix.EpollEvent, parkEvents)
	var ready []*parkEntry
	swept := time.Now()
	for {
		n, err := unix.EpollWait(p.epfd, events, int(parkTick/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.broken(fmt.Errorf("hbone: parker: epoll_wait: %w", err))
			return
		}
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if e := p.parked[id]; e != nil {
				delete(p.parked, id)
				ready = append(ready, e)
			}
		}
		var detach []*heldSock
		if time.Since(swept) >= sweepEvery {
			swept = time.Now()
			ready = p.closedLocked(ready)
			detach = p.attachedLocked()
		}
		p.parked = shrink.Map(p.parked, &p.peak)
		stop := n == 0 && len(p.parked) == 0
		if stop {
			p.running = false
		}
		p.mu.Unlock()
		for _, e := range ready {
			go e.resume.run()
		}
		clear(ready)
		ready = ready[:0]
		if detach != nil {
			go p.detach(detach)
		}
		if stop {
			return
		}
	}
}

// closedLocked takes the parked sockets that are closed and appends them
// to ready.
func (p *parker) closedLocked(ready []*parkEntry) []*parkEntry {
	for id, e := range p.parked {
		if e.rc.Control(func(uintptr) {}) != nil {
			delete(p.parked, id)
			ready = append(ready, e)
		}
	}
	return ready
}

// attachedLocked returns the parked sockets still in the net package for
// detach, unless a detach is running.
func (p *parker) attachedLocked() []*heldSock {
	if p.detaching {
		return nil
	}
	var socks []*heldSock
	for _, e := range p.parked {
		if r, ok := e.rc.(*heldRaw); ok && (*heldSock)(r).inNet() {
			socks = append(socks, (*heldSock)(r))
		}
	}
	p.detaching = socks != nil
	return socks
}

// detach detaches socks (heldSock.detach skips those in use again), away
// from the loop: ten thousand take tens of milliseconds.
func (p *parker) detach(socks []*heldSock) {
	for _, s := range socks {
		s.detach()
	}
	p.mu.Lock()
	p.detaching = false
	p.mu.Unlock()
}

// detachParked detaches the parked sockets now, as a sweep does.
func (p *parker) detachParked() {
	p.mu.Lock()
	socks := p.attachedLocked()
	p.mu.Unlock()
	p.detach(socks)
}

// resumeClosed resumes the parked sockets that are closed now, as the
// loop's sweep does.
func (p *parker) resumeClosed() {
	p.mu.Lock()
	ready := p.closedLocked(nil)
	p.mu.Unlock()
	for _, e := range ready {
		go e.resume.run()
	}
}

// broken resumes everything parked and refuses parking from now on: the
// copies keep their goroutines. epoll_wait fails only on a bug.
func (p *parker) broken(err error) {
	p.mu.Lock()
	p.err, p.running = err, false
	parked := p.parked
	p.parked = map[uint64]*parkEntry{}
	p.mu.Unlock()
	for _, e := range parked {
		go e.resume.run()
	}
}
