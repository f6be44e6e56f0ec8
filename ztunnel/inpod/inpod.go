// Package inpod is ztunnel's side of the hand-off protocol with the node
// agent (api/zds): it connects to the agent's SOCK_SEQPACKET socket, says
// hello, and turns the agent's snapshot (Add/Keep, then SnapshotSent) and
// live Add/Del messages, each carrying a pod's network namespace, into pods
// served by the proxy, acknowledging every message. It reconnects when the
// agent restarts; pods keep being served meanwhile.
package inpod

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
)

// ErrMalformed wraps every reason a message from the agent is refused.
var ErrMalformed = errors.New("malformed hand-off message")

// Message is one decoded request from the agent.
type Message struct {
	// Kind is "add", "keep", "del" or "snapshot-sent".
	Kind string
	UID  string
	Info *zdsapi.WorkloadInfo
}

// Decode parses one datagram that came with fds file descriptors: an add
// needs a uid, a name, a namespace and exactly one descriptor; every other
// message none.
func Decode(b []byte, fds int) (Message, error) {
	var r zdsapi.WorkloadRequest
	if err := proto.Unmarshal(b, &r); err != nil {
		return Message{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var m Message
	want := 0
	switch p := r.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		m = Message{Kind: "add", UID: p.Add.GetUid(), Info: p.Add.GetWorkloadInfo()}
		if m.Info.GetName() == "" || m.Info.GetNamespace() == "" {
			return Message{}, fmt.Errorf("%w: add %q without pod name and namespace", ErrMalformed, m.UID)
		}
		want = 1
	case *zdsapi.WorkloadRequest_Keep:
		m = Message{Kind: "keep", UID: p.Keep.GetUid()}
	case *zdsapi.WorkloadRequest_Del:
		m = Message{Kind: "del", UID: p.Del.GetUid()}
	case *zdsapi.WorkloadRequest_SnapshotSent:
		return Message{Kind: "snapshot-sent"}, checkFDs(fds, 0)
	default:
		return Message{}, fmt.Errorf("%w: request without payload", ErrMalformed)
	}
	if m.UID == "" {
		return Message{}, fmt.Errorf("%w: %s without uid", ErrMalformed, m.Kind)
	}
	return m, checkFDs(fds, want)
}

func checkFDs(got, want int) error {
	if got != want {
		return fmt.Errorf("%w: %d file descriptors, want %d", ErrMalformed, got, want)
	}
	return nil
}

func hello() []byte {
	b, _ := proto.Marshal(&zdsapi.ZdsHello{Version: zdsapi.Version_V1}) // cannot fail
	return b
}

func ack(err error) []byte {
	a := &zdsapi.Ack{}
	if err != nil {
		a.Error = err.Error()
	}
	b, _ := proto.Marshal(&zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: a}}) // cannot fail
	return b
}
