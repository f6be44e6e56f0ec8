// Package zdstest is a minimal ztunnel side of the hand-off protocol for tests: it
// connects, says hello, and reads and acknowledges what the node agent sends.
package zdstest

import (
	"fmt"
	"net"
	"os"
	"time"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
	"github.com/ambit-mesh/ambit/cni/seqpacket"
	"github.com/ambit-mesh/ambit/cni/zds"
)

// Client is a fake ztunnel connection.
type Client struct {
	c *net.UnixConn
}

// Dial connects to the agent's socket and sends ZdsHello.
func Dial(path string) (*Client, error) {
	c, err := seqpacket.Dial(path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if err := seqpacket.Send(c, zds.EncodeHello(), nil); err != nil {
		c.Close()
		return nil, err
	}
	return &Client{c: c}, nil
}

// Recv reads the next request (within timeout) and the netns that came with it (nil
// unless it is an AddWorkload). The caller closes the file.
func (cl *Client) Recv(timeout time.Duration) (*zdsapi.WorkloadRequest, *os.File, error) {
	if err := cl.c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, nil, err
	}
	b, files, err := seqpacket.Recv(cl.c)
	if err != nil {
		return nil, nil, err
	}
	req, err := zds.DecodeRequest(b, len(files))
	if err != nil {
		seqpacket.CloseAll(files)
		return nil, nil, err
	}
	var f *os.File
	if len(files) == 1 {
		f = files[0]
	}
	return req, f, nil
}

// Ack answers the last request; errMsg "" is success.
func (cl *Client) Ack(errMsg string) error {
	return seqpacket.Send(cl.c, zds.EncodeAck(errMsg), nil)
}

// Event is a request in short form: "add UID", "keep UID", "del UID" or "snapshot".
func Event(r *zdsapi.WorkloadRequest) string {
	switch p := r.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		return "add " + p.Add.GetUid()
	case *zdsapi.WorkloadRequest_Keep:
		return "keep " + p.Keep.GetUid()
	case *zdsapi.WorkloadRequest_Del:
		return "del " + p.Del.GetUid()
	case *zdsapi.WorkloadRequest_SnapshotSent:
		return "snapshot"
	}
	return fmt.Sprintf("unknown %T", r.GetPayload())
}

// Close hangs up.
func (cl *Client) Close() error { return cl.c.Close() }
