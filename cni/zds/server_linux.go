package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
	"github.com/ambit-mesh/ambit/cni/seqpacket"
)

// ErrRejected is returned when ztunnel answered a request with an error.
var ErrRejected = errors.New("ztunnel rejected the workload")

// DefaultAckTimeout bounds the wait for one Ack.
const DefaultAckTimeout = 5 * time.Second

// Workload is one enrolled pod as ztunnel gets it.
type Workload struct {
	UID  string
	Info *zdsapi.WorkloadInfo
	// Netns is the pod's network namespace. Nil means the agent could not find it
	// (after a restart): snapshots then say KeepWorkload.
	Netns *os.File
}

// entry is a recorded workload and its generation: a new Add of the same uid (a
// recreated sandbox) is a new generation, which a connection that has an older one
// must be sent again.
type entry struct {
	Workload
	gen uint64
}

// Server serves the hand-off socket. Several ztunnels may be connected at once: during
// a rollout the new one starts (and connects) while the old one still serves. Every
// connection gets the full snapshot first; live Adds go to the newest ztunnel whose
// snapshot completed, so that the ztunnel that is taking over serves new pods and the
// old one keeps only what it has; Dels go to every connection that has the pod, so
// that none keeps listeners in a pod that is gone or released. When the newest
// connection goes away while an older one is still connected (a new ztunnel that
// crashed during a rollout), the older one becomes the newest again and is sent the
// Adds it missed first.
//
// Newest means the most recently started ztunnel process (SO_PEERCRED and its
// start time in procfs), so that an old ztunnel reconnecting (after an agent restart,
// say) does not take new pods from the one that replaces it; when start times cannot
// be told, the last connection is the newest.
type Server struct {
	path       string
	log        *slog.Logger
	ackTimeout time.Duration

	// started tells when the process behind a connection started (0: unknown).
	started func(*net.UnixConn) uint64

	mu        sync.Mutex // guards workloads, gen and conns; held while talking to ztunnel
	workloads map[string]entry
	gen       uint64
	conns     []*conn // snapshot completed, oldest first: the last one gets live Adds
}

// NewServer returns a server for the socket at path; proc is the host's procfs (the
// agent runs with hostPID), where ztunnels' start times are read ("" to order
// ztunnels by connection only). It does no I/O until Run.
func NewServer(path string, ackTimeout time.Duration, proc string, log *slog.Logger) *Server {
	if ackTimeout <= 0 {
		ackTimeout = DefaultAckTimeout
	}
	s := &Server{path: path, log: log, ackTimeout: ackTimeout, workloads: map[string]entry{},
		started: func(*net.UnixConn) uint64 { return 0 }}
	if proc != "" {
		s.started = func(c *net.UnixConn) uint64 {
			t, err := peerStart(proc, c)
			if err != nil {
				log.Warn("cannot tell when a connecting ztunnel started; ordering by connection", "err", err)
			}
			return t
		}
	}
	return s
}

// Run serves ztunnel connections until ctx ends, then closes them and every netns
// descriptor it holds.
func (s *Server) Run(ctx context.Context) error {
	ln, err := seqpacket.Listen(s.path)
	if err != nil {
		return fmt.Errorf("zds: %w", err)
	}
	s.log.Info("serving ztunnel hand-off", "socket", s.path)
	err = seqpacket.Serve(ctx, ln, func(ctx context.Context, c *net.UnixConn) {
		nc := newConn(c, s.ackTimeout)
		nc.started = s.started(c)
		s.serve(ctx, nc)
	})
	if err != nil {
		err = fmt.Errorf("zds: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workloads {
		if w.Netns != nil {
			w.Netns.Close()
		}
	}
	s.workloads = map[string]entry{}
	return err
}

// serve runs one ztunnel connection: hello, snapshot, then live updates until either
// side goes away.
func (s *Server) serve(ctx context.Context, c *conn) {
	defer c.wait()
	log := s.log.With("conn", c.id)
	if err := c.hello(); err != nil {
		log.Warn("ztunnel hello failed", "err", err)
		return
	}
	s.mu.Lock()
	err := s.sendSnapshot(c)
	if err == nil {
		// After every connection from a process started no later: an old ztunnel
		// that reconnects does not become the newest.
		i := len(s.conns)
		for i > 0 && s.conns[i-1].started > c.started {
			i--
		}
		s.conns = slices.Insert(s.conns, i, c)
	}
	n, newest, others := len(s.workloads), s.newest() == c, len(s.conns)-1
	s.mu.Unlock()
	if err != nil {
		log.Warn("snapshot to ztunnel failed", "err", err)
		return
	}
	log.Info("ztunnel connected, snapshot sent", "workloads", n, "gets new pods", newest, "other connections", others)
	select {
	case <-ctx.Done():
	case <-c.dead:
		log.Info("ztunnel disconnected", "err", c.err())
	}
	s.mu.Lock()
	if ctx.Err() != nil {
		// The agent is stopping: nobody is to be caught up.
		s.conns = slices.DeleteFunc(s.conns, func(x *conn) bool { return x == c })
	} else {
		s.drop(c, nil)
	}
	s.mu.Unlock()
}

// sendSnapshot sends every workload, then SnapshotSent. Callers hold s.mu.
func (s *Server) sendSnapshot(c *conn) error {
	for _, uid := range slices.Sorted(maps.Keys(s.workloads)) {
		w := s.workloads[uid]
		var err error
		if w.Netns != nil {
			err = c.request(addRequest(w.UID, w.Info), w.Netns)
		} else {
			err = c.request(keepRequest(w.UID), nil)
		}
		if errors.Is(err, ErrRejected) {
			// ztunnel does not want this one now; a reconnect would not change that.
			s.log.Warn("ztunnel rejected a workload in the snapshot", "conn", c.id, "uid", uid, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("workload %s: %w", uid, err)
		}
		c.has[uid] = w.gen
	}
	return c.request(snapshotSentRequest(), nil)
}

// newest is the connection live Adds go to, or nil. Callers hold s.mu.
func (s *Server) newest() *conn {
	if len(s.conns) == 0 {
		return nil
	}
	return s.conns[len(s.conns)-1]
}

// drop forgets c (closing it if err says why it failed mid-request; a connection that
// went away by itself is already closed). If c was the newest and an older
// connection remains, that one is caught up: it takes over new pods. Callers hold
// s.mu.
func (s *Server) drop(c *conn, err error) {
	i := slices.Index(s.conns, c)
	if i < 0 {
		return
	}
	if err != nil {
		s.log.Warn("ztunnel connection failed, waiting for it to reconnect", "conn", c.id, "err", err)
		c.close()
	}
	s.conns = slices.Delete(s.conns, i, i+1)
	if i == len(s.conns) {
		s.catchUp()
	}
}

// catchUp brings the newest connection up to date after a newer one went away: Adds
// for the workloads (or generations) it lacks, Dels for any it should not have. A
// connection that fails meanwhile is dropped and the next older one caught up.
// Callers hold s.mu.
func (s *Server) catchUp() {
	c := s.newest()
	if c == nil {
		return
	}
	for _, uid := range slices.Sorted(maps.Keys(c.has)) {
		if _, ok := s.workloads[uid]; ok {
			continue
		}
		if err := c.request(delRequest(uid), nil); err != nil && !errors.Is(err, ErrRejected) {
			s.drop(c, err)
			return
		}
		delete(c.has, uid)
	}
	sent := 0
	for _, uid := range slices.Sorted(maps.Keys(s.workloads)) {
		w := s.workloads[uid]
		if gen, ok := c.has[uid]; w.Netns == nil || (ok && gen == w.gen) {
			continue
		}
		err := c.request(addRequest(w.UID, w.Info), w.Netns)
		if errors.Is(err, ErrRejected) {
			s.log.Warn("ztunnel rejected a workload while catching up", "conn", c.id, "uid", uid, "err", err)
			continue
		}
		if err != nil {
			s.drop(c, err)
			return
		}
		c.has[uid] = w.gen
		sent++
	}
	s.log.Info("the newest ztunnel went away; an older connection takes new pods again", "conn", c.id, "added", sent)
}

// Connected reports whether a ztunnel has a completed snapshot and is listening.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) > 0
}

// Has reports whether the server holds the workload uid.
func (s *Server) Has(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.workloads[uid]
	return ok
}

// Add records w (taking ownership of w.Netns) and, if a ztunnel is connected, sends it
// to the newest one and waits for the Ack. ztunnel rejecting it returns ErrRejected
// and records nothing. No ztunnel, or a ztunnel that goes away meanwhile, is not an
// error: the next connection gets w in its snapshot (or, if an older connection
// remains, in its catch-up). Adding a uid again replaces it (ztunnel treats Add as
// upsert).
func (s *Server) Add(w Workload) error {
	if w.UID == "" || w.Netns == nil {
		return errors.New("zds: add needs a uid and a netns")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var failed *conn
	var ferr error
	if c := s.newest(); c != nil {
		err := c.request(addRequest(w.UID, w.Info), w.Netns)
		if errors.Is(err, ErrRejected) {
			w.Netns.Close()
			return fmt.Errorf("zds: add %s: %w", w.UID, err)
		}
		if err != nil {
			failed, ferr = c, err
		}
	}
	if old, ok := s.workloads[w.UID]; ok && old.Netns != nil && old.Netns != w.Netns {
		old.Netns.Close()
	}
	s.gen++
	s.workloads[w.UID] = entry{Workload: w, gen: s.gen}
	if c := s.newest(); c != nil && failed == nil {
		c.has[w.UID] = s.gen
	}
	if failed != nil {
		s.drop(failed, ferr) // an older connection, if any, is caught up with w
	}
	return nil
}

// Keep records a workload whose netns could not be found, so that snapshots ask
// ztunnel to keep it rather than drop it.
func (s *Server) Keep(uid string, info *zdsapi.WorkloadInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.workloads[uid]; !ok {
		s.gen++
		s.workloads[uid] = entry{Workload: Workload{UID: uid, Info: info}, gen: s.gen}
	}
}

// Del forgets the workload uid and tells every connected ztunnel that has it. Unknown
// uids are fine.
func (s *Server) Del(uid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workloads[uid]
	if !ok {
		return nil
	}
	delete(s.workloads, uid)
	if w.Netns != nil {
		defer w.Netns.Close()
	}
	var errs []error
	for _, c := range slices.Clone(s.conns) {
		if _, has := c.has[uid]; !has {
			continue
		}
		err := c.request(delRequest(uid), nil)
		if errors.Is(err, ErrRejected) {
			// ztunnel keeps nothing for a pod the agent released; its next snapshot
			// will not name it either.
			delete(c.has, uid)
			errs = append(errs, fmt.Errorf("zds: del %s: %w", uid, err))
			continue
		}
		if err != nil {
			s.drop(c, err)
			continue
		}
		delete(c.has, uid)
	}
	return errors.Join(errs...)
}

// conn is one ztunnel connection. Requests are strictly one at a time (the server's
// lock serializes them); a reader goroutine delivers Acks and notices hang-ups.
type conn struct {
	id         string
	started    uint64            // the process's start time (clock ticks since boot; 0: unknown)
	has        map[string]uint64 // uid -> generation it was sent; guarded by Server.mu
	c          *net.UnixConn
	ackTimeout time.Duration
	acks       chan *zdsapi.Ack
	dead       chan struct{} // closed by close
	readDone   chan struct{} // closed when the reader returns

	reading bool // set before the reader starts, by the serving goroutine
	once    sync.Once
	mu      sync.Mutex
	readErr error
}

func newConn(c *net.UnixConn, ackTimeout time.Duration) *conn {
	return &conn{id: fmt.Sprintf("%p", c), c: c, ackTimeout: ackTimeout, has: map[string]uint64{},
		acks: make(chan *zdsapi.Ack, 1), dead: make(chan struct{}), readDone: make(chan struct{})}
}

// hello reads ztunnel's ZdsHello, then starts the reader.
func (c *conn) hello() error {
	if err := c.c.SetReadDeadline(time.Now().Add(c.ackTimeout)); err != nil {
		return err
	}
	b, files, err := seqpacket.Recv(c.c)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	seqpacket.CloseAll(files)
	if _, err := DecodeHello(b); err != nil {
		return err
	}
	if err := c.c.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	c.reading = true
	go c.read()
	return nil
}

// wait closes the connection and waits for its reader.
func (c *conn) wait() {
	c.close()
	if c.reading {
		<-c.readDone
	}
}

func (c *conn) read() {
	defer close(c.readDone)
	for {
		b, files, err := seqpacket.Recv(c.c)
		if err == nil {
			seqpacket.CloseAll(files)
			var ack *zdsapi.Ack
			ack, err = DecodeResponse(b)
			if err == nil {
				select {
				case c.acks <- ack:
					continue
				default:
					err = errors.New("unsolicited ack")
				}
			}
		}
		c.mu.Lock()
		c.readErr = err
		c.mu.Unlock()
		c.close()
		return
	}
}

func (c *conn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

func (c *conn) close() {
	c.once.Do(func() {
		c.c.Close()
		close(c.dead)
	})
}

// request sends one message and waits for its Ack.
func (c *conn) request(b []byte, fd *os.File) error {
	if err := seqpacket.Send(c.c, b, fd); err != nil {
		c.close()
		return err
	}
	t := time.NewTimer(c.ackTimeout)
	defer t.Stop()
	select {
	case ack := <-c.acks:
		if ack.GetError() != "" {
			return fmt.Errorf("%w: %s", ErrRejected, ack.GetError())
		}
		return nil
	case <-c.dead:
		return fmt.Errorf("connection closed: %w", c.err())
	case <-t.C:
		c.close()
		return errors.New("no ack in time")
	}
}
