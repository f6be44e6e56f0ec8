package enroll

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestDecodeRequest(t *testing.T) {
	ok := Request{Command: Add, PodNamespace: "demo", PodName: "p", IPs: []string{"10.0.0.1"}}
	enc := func(r Request) []byte { b, _ := json.Marshal(r); return b }
	tests := []struct {
		name    string
		b       []byte
		fds     int
		wantErr bool
	}{
		{"add", enc(ok), 1, false},
		{"add without netns", enc(ok), 0, true},
		{"del", enc(Request{Command: Del, PodNamespace: "demo", PodName: "p"}), 0, false},
		{"del with netns", enc(Request{Command: Del, PodNamespace: "demo", PodName: "p"}), 1, true},
		{"unknown command", enc(Request{Command: "VERSION", PodNamespace: "demo", PodName: "p"}), 0, true},
		{"no pod", enc(Request{Command: Add}), 1, true},
		{"bad ip", enc(Request{Command: Add, PodNamespace: "demo", PodName: "p", IPs: []string{"x"}}), 1, true},
		{"garbage", []byte("{"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest(tt.b, tt.fds)
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeRequest() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("%v is not ErrMalformed", err)
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"command":"ADD","podNamespace":"demo","podName":"p","ips":["10.0.0.1"]}`), uint8(1))
	f.Add([]byte(`{"command":"DEL","podNamespace":"demo","podName":"p"}`), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, fds uint8) {
		_, _ = DecodeRequest(b, int(fds))
		_, _ = DecodeResponse(b)
	})
}
