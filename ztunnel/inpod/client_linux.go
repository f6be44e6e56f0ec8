package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambit-mesh/ambit/internal/netns"
	"github.com/ambit-mesh/ambit/internal/reconnect"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
)

// Proxy is what the client drives.
type Proxy interface {
	AddPod(p proxy.Pod) error
	RemovePod(uid string)
	Pods() []string
}

// Config configures a Client.
type Config struct {
	// Socket is the node agent's hand-off socket (…/ztunnel.sock).
	Socket string
	Proxy  Proxy
	// Mark is set on the sockets opened in pods (proxy.DefaultMark).
	Mark uint32
	// RetryMin and RetryMax bound the reconnect backoff (defaults 100 ms, 5 s).
	RetryMin, RetryMax time.Duration
	// Synced, if set, is called once, after the first complete snapshot
	// (SnapshotSent) has been applied: from then on every enrolled pod is
	// served.
	Synced func()
	Log    *slog.Logger
}

// Client keeps a connection to the node agent.
type Client struct {
	cfg Config
	// netns identifies the namespace each added pod was given, so that an
	// agent restart re-sending the same pod changes nothing while a pod
	// whose sandbox (and namespace) was recreated is replaced.
	netns  map[string]nsID
	synced bool
}

type nsID struct{ dev, ino uint64 }

func identify(f *os.File) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nsID{}, fmt.Errorf("stat netns: %w", err)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// New returns a Client; it does no I/O until Run.
func New(cfg Config) (*Client, error) {
	if cfg.Socket == "" || cfg.Proxy == nil {
		return nil, errors.New("inpod: Config needs Socket and Proxy")
	}
	if cfg.Mark == 0 {
		cfg.Mark = proxy.DefaultMark
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(5*time.Second, cfg.RetryMin)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, netns: map[string]nsID{}}, nil
}

// Run connects, serves the agent and reconnects with backoff until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	return reconnect.Loop(ctx, c.cfg.RetryMin, c.cfg.RetryMax, c.session, func(err error, backoff time.Duration) {
		c.cfg.Log.Warn("node agent connection ended, reconnecting", "err", err, "backoff", backoff)
	})
}

// session runs one connection: hello, snapshot, live updates.
func (c *Client) session(ctx context.Context) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", c.cfg.Socket)
	if err != nil {
		return fmt.Errorf("inpod: dial %s: %w", c.cfg.Socket, err)
	}
	conn := nc.(*net.UnixConn)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	if _, err := conn.Write(hello()); err != nil {
		return fmt.Errorf("inpod: hello: %w", err)
	}
	c.cfg.Log.Info("connected to the node agent", "socket", c.cfg.Socket)
	snapshot := map[string]bool{} // uids named by the snapshot; nil once it is over
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return fmt.Errorf("inpod: read: %w", err)
		}
		files, ferr := rights(oob[:oobn])
		if n == 0 && ferr == nil && len(files) == 0 {
			return errors.New("inpod: the node agent closed the connection")
		}
		var reply error
		switch {
		case ferr != nil:
			reply = ferr
		case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
			reply = fmt.Errorf("%w: truncated", ErrMalformed)
		default:
			var m Message
			if m, reply = Decode(buf[:n], len(files)); reply == nil {
				reply = c.apply(m, files, snapshot)
				files = nil // apply owns them
				if m.Kind == "snapshot-sent" && reply == nil {
					snapshot = nil
					c.snapshotDone()
				}
			}
		}
		for _, f := range files {
			f.Close()
		}
		if reply != nil {
			c.cfg.Log.Warn("hand-off message refused", "err", reply)
		}
		if _, err := conn.Write(ack(reply)); err != nil {
			return fmt.Errorf("inpod: ack: %w", err)
		}
	}
}

// apply carries out one message; snapshot (nil after SnapshotSent) records
// the uids the snapshot names.
func (c *Client) apply(m Message, files []*os.File, snapshot map[string]bool) error {
	switch m.Kind {
	case "add":
		id, err := identify(files[0])
		if err != nil {
			files[0].Close()
			return err
		}
		if snapshot != nil {
			snapshot[m.UID] = true
		}
		if old, ok := c.netns[m.UID]; ok && old == id && c.has(m.UID) {
			files[0].Close() // already served in that namespace: keep its connections
			return nil
		}
		h := netns.FromFile(files[0])
		err = c.cfg.Proxy.AddPod(proxy.Pod{UID: m.UID, Name: m.Info.GetName(), Namespace: m.Info.GetNamespace(),
			ServiceAccount: orDefault(m.Info.GetServiceAccount()), Sockets: proxy.NewNetnsSockets(h, c.cfg.Mark)})
		if err != nil {
			h.Close()
			if snapshot != nil {
				delete(snapshot, m.UID)
			}
			return fmt.Errorf("add pod %s/%s: %w", m.Info.GetNamespace(), m.Info.GetName(), err)
		}
		c.netns[m.UID] = id
		c.cfg.Log.Info("pod added", "pod", m.Info.GetName(), "namespace", m.Info.GetNamespace(), "uid", m.UID)
	case "keep":
		if !c.has(m.UID) {
			return fmt.Errorf("keep %s: this ztunnel does not have that pod", m.UID)
		}
		if snapshot != nil {
			snapshot[m.UID] = true
		}
	case "del":
		c.cfg.Proxy.RemovePod(m.UID)
		delete(c.netns, m.UID)
		c.cfg.Log.Info("pod removed", "uid", m.UID)
	case "snapshot-sent":
		if snapshot == nil {
			return errors.New("snapshot-sent outside a snapshot")
		}
		for _, uid := range c.cfg.Proxy.Pods() {
			if !snapshot[uid] {
				c.cfg.Proxy.RemovePod(uid)
				delete(c.netns, uid)
				c.cfg.Log.Info("pod removed: not in the agent's snapshot", "uid", uid)
			}
		}
	}
	return nil
}

// snapshotDone reports the first complete snapshot to Synced.
func (c *Client) snapshotDone() {
	if !c.synced {
		c.synced = true
		if c.cfg.Synced != nil {
			c.cfg.Synced()
		}
	}
}

func (c *Client) has(uid string) bool {
	return slices.Contains(c.cfg.Proxy.Pods(), uid)
}

func orDefault(sa string) string {
	if sa == "" {
		return "default"
	}
	return sa
}

// rights returns the descriptors passed as SCM_RIGHTS, as files.
func rights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %w", ErrMalformed, err)
	}
	var files []*os.File
	var perr error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		if len(m.Data)%4 != 0 {
			perr = fmt.Errorf("%w: partial descriptor", ErrMalformed)
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			perr = fmt.Errorf("%w: %w", ErrMalformed, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	if perr != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, perr
	}
	return files, nil
}
