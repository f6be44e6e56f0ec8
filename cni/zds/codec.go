package zds

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
)

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed zds message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// DecodeHello parses ztunnel's first datagram.
func DecodeHello(b []byte) (*zdsapi.ZdsHello, error) {
	var h zdsapi.ZdsHello
	if err := proto.Unmarshal(b, &h); err != nil {
		return nil, malformed("hello: %v", err)
	}
	if h.GetVersion() != zdsapi.Version_V1 {
		return nil, malformed("hello: unsupported version %v", h.GetVersion())
	}
	return &h, nil
}

// DecodeRequest parses and validates one agent->ztunnel datagram that arrived with
// fds file descriptors: an AddWorkload needs a uid and exactly one descriptor, every
// other message none.
func DecodeRequest(b []byte, fds int) (*zdsapi.WorkloadRequest, error) {
	var r zdsapi.WorkloadRequest
	if err := proto.Unmarshal(b, &r); err != nil {
		return nil, malformed("request: %v", err)
	}
	wantFDs := 0
	switch p := r.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		if p.Add.GetUid() == "" {
			return nil, malformed("add: empty uid")
		}
		wantFDs = 1
	case *zdsapi.WorkloadRequest_Keep:
		if p.Keep.GetUid() == "" {
			return nil, malformed("keep: empty uid")
		}
	case *zdsapi.WorkloadRequest_Del:
		if p.Del.GetUid() == "" {
			return nil, malformed("del: empty uid")
		}
	case *zdsapi.WorkloadRequest_SnapshotSent:
	default:
		return nil, malformed("request without payload")
	}
	if fds != wantFDs {
		return nil, malformed("request carries %d file descriptors, want %d", fds, wantFDs)
	}
	return &r, nil
}

// DecodeResponse parses one ztunnel->agent datagram; it must be an Ack.
func DecodeResponse(b []byte) (*zdsapi.Ack, error) {
	var r zdsapi.WorkloadResponse
	if err := proto.Unmarshal(b, &r); err != nil {
		return nil, malformed("response: %v", err)
	}
	ack := r.GetAck()
	if ack == nil {
		return nil, malformed("response is not an ack")
	}
	return ack, nil
}

func marshal(m proto.Message) []byte {
	// Marshalling our own well-formed messages cannot fail.
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err))
	}
	return b
}

func addRequest(uid string, info *zdsapi.WorkloadInfo) []byte {
	return marshal(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid, WorkloadInfo: info}}})
}

func keepRequest(uid string) []byte {
	return marshal(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}})
}

func delRequest(uid string) []byte {
	return marshal(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}})
}

func snapshotSentRequest() []byte {
	return marshal(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}})
}

// EncodeHello is ztunnel's first datagram.
func EncodeHello() []byte { return marshal(&zdsapi.ZdsHello{Version: zdsapi.Version_V1}) }

// EncodeAck is ztunnel's answer to a request; errMsg "" means success.
func EncodeAck(errMsg string) []byte {
	return marshal(&zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: errMsg}}})
}
