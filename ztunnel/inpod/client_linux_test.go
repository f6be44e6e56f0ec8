package inpod

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
	"github.com/ambit-mesh/ambit/ztunnel/proxy"
)

// fakeProxy records what the client asks for.
type fakeProxy struct {
	mu   sync.Mutex
	pods map[string]proxy.Pod
	adds int
}

func (f *fakeProxy) AddPod(p proxy.Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.pods[p.UID]; ok {
		old.Sockets.Close()
	}
	f.pods[p.UID] = p
	f.adds++
	return nil
}

func (f *fakeProxy) RemovePod(uid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pods[uid]; ok {
		p.Sockets.Close()
		delete(f.pods, uid)
	}
}

func (f *fakeProxy) Pods() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for uid := range f.pods {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

func (f *fakeProxy) addCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds
}

// agent is a minimal node agent: it accepts one ztunnel at a time and
// sends requests, waiting for each ack.
type agent struct {
	t  *testing.T
	ln *net.UnixListener
	c  *net.UnixConn
}

func newAgent(t *testing.T, path string) *agent {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &agent{t: t, ln: ln}
}

func (a *agent) accept() {
	a.t.Helper()
	if err := a.ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		a.t.Fatal(err)
	}
	c, err := a.ln.AcceptUnix()
	if err != nil {
		a.t.Fatal(err)
	}
	a.c = c
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		a.t.Fatal(err)
	}
	var h zdsapi.ZdsHello
	if err := proto.Unmarshal(buf[:n], &h); err != nil || h.GetVersion() != zdsapi.Version_V1 {
		a.t.Fatalf("hello: %v %v", &h, err)
	}
}

// send sends one raw request (with fd when non-nil) and returns the ack's error.
func (a *agent) send(b []byte, fd *os.File) string {
	a.t.Helper()
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	if _, _, err := a.c.WriteMsgUnix(b, oob, nil); err != nil {
		a.t.Fatal(err)
	}
	if err := a.c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		a.t.Fatal(err)
	}
	buf := make([]byte, 1024)
	n, err := a.c.Read(buf)
	if err != nil {
		a.t.Fatal(err)
	}
	var r zdsapi.WorkloadResponse
	if err := proto.Unmarshal(buf[:n], &r); err != nil || r.GetAck() == nil {
		a.t.Fatalf("ack: %v %v", &r, err)
	}
	return r.GetAck().GetError()
}

func req(r *zdsapi.WorkloadRequest) []byte {
	b, err := proto.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}

func addReq(uid string) []byte {
	return req(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{
		Uid: uid, WorkloadInfo: &zdsapi.WorkloadInfo{Name: "pod-" + uid, Namespace: "ns", ServiceAccount: "sa"}}}})
}

func keepReq(uid string) []byte {
	return req(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}})
}

func delReq(uid string) []byte {
	return req(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}})
}

var snapshotSent = req(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}})

func ownNetns(t *testing.T) *os.File {
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestClientFollowsSnapshotsAndSurvivesAgentRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	ag := newAgent(t, path)
	fp := &fakeProxy{pods: map[string]proxy.Pod{}}
	var synced atomic.Int32
	c, err := New(Config{Socket: path, Proxy: fp, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
		Synced: func() { synced.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ns := ownNetns(t)

	ag.accept()
	if synced.Load() != 0 {
		t.Fatal("synced before the snapshot")
	}
	for _, uid := range []string{"u1", "u2", "u3"} {
		if e := ag.send(addReq(uid), ns); e != "" {
			t.Fatalf("add %s: %s", uid, e)
		}
	}
	if e := ag.send(snapshotSent, nil); e != "" {
		t.Fatal(e)
	}
	if got := fp.Pods(); !slices.Equal(got, []string{"u1", "u2", "u3"}) {
		t.Fatalf("pods after snapshot: %v", got)
	}
	if n := synced.Load(); n != 1 {
		t.Fatalf("Synced called %d times after the first snapshot, want 1", n)
	}
	if e := ag.send([]byte("\xff\xff garbage"), nil); e == "" {
		t.Fatal("garbage acked without error")
	}
	if e := ag.send(addReq("u4"), nil); e == "" {
		t.Fatal("add without a netns acked without error")
	}
	if e := ag.send(keepReq("nope"), nil); e == "" {
		t.Fatal("keep of an unknown pod acked without error")
	}

	// The agent restarts: same pods again (u1 with its netns, u2 kept), u3 gone.
	ag.c.Close()
	ag.accept()
	adds := fp.addCount()
	if e := ag.send(addReq("u1"), ns); e != "" {
		t.Fatal(e)
	}
	if e := ag.send(keepReq("u2"), nil); e != "" {
		t.Fatal(e)
	}
	if e := ag.send(snapshotSent, nil); e != "" {
		t.Fatal(e)
	}
	if n := fp.addCount(); n != adds {
		t.Errorf("re-sent pod in the same netns was re-added (%d -> %d adds): its connections would drop", adds, n)
	}
	if got := fp.Pods(); !slices.Equal(got, []string{"u1", "u2"}) {
		t.Fatalf("pods after the second snapshot: %v", got)
	}
	if e := ag.send(delReq("u1"), nil); e != "" {
		t.Fatal(e)
	}
	if got := fp.Pods(); !slices.Equal(got, []string{"u2"}) {
		t.Fatalf("pods after del: %v", got)
	}
	if n := synced.Load(); n != 1 {
		t.Errorf("Synced called %d times after two snapshots, want once", n)
	}
}
