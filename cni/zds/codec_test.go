package zds

import (
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		fds     int
		wantErr bool
	}{
		{"add with netns", addRequest("u", nil), 1, false},
		{"add without netns", addRequest("u", nil), 0, true},
		{"add without uid", addRequest("", nil), 1, true},
		{"keep", keepRequest("u"), 0, false},
		{"keep with fd", keepRequest("u"), 1, true},
		{"del", delRequest("u"), 0, false},
		{"del without uid", delRequest(""), 0, true},
		{"snapshot", snapshotSentRequest(), 0, false},
		{"empty", nil, 0, true},
		{"garbage", []byte{0xff, 0x01}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest(tt.b, tt.fds)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeRequest() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v is not ErrMalformed", err)
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	if ack, err := DecodeResponse(EncodeAck("boom")); err != nil || ack.GetError() != "boom" {
		t.Errorf("DecodeResponse(ack) = %v, %v", ack, err)
	}
	for name, b := range map[string][]byte{"empty": nil, "garbage": {0x0a, 0xff}, "request": keepRequest("u")} {
		if _, err := DecodeResponse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeResponse() = %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecodeRequest: no input may panic; what decodes re-encodes to an equal message.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(addRequest("uid", &zdsapi.WorkloadInfo{Name: "n", Namespace: "ns", ServiceAccount: "sa"}), uint8(1))
	f.Add(keepRequest("uid"), uint8(0))
	f.Add(delRequest("uid"), uint8(0))
	f.Add(snapshotSentRequest(), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, fds uint8) {
		r, err := DecodeRequest(b, int(fds))
		if err != nil {
			return
		}
		again, err := DecodeRequest(marshal(r), int(fds))
		if err != nil || !proto.Equal(r, again) {
			t.Fatalf("round trip: %v, %v vs %v", err, r, again)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(EncodeAck(""))
	f.Add(EncodeAck("error"))
	f.Add(EncodeHello())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeResponse(b)
		_, _ = DecodeHello(b)
	})
}

func seqpacketDialForTest(path string) (*net.UnixConn, error) {
	c, err := net.DialTimeout("unixpacket", path, time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
