package inpod

import (
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary datagrams to the decoder: it must never panic,
// and whatever it accepts must be well formed.
func FuzzDecode(f *testing.F) {
	f.Add(addReq("uid"), 1)
	f.Add(keepReq("uid"), 0)
	f.Add(delReq("uid"), 0)
	f.Add(snapshotSent, 0)
	f.Add([]byte{0x0a, 0x00}, 1)
	f.Fuzz(func(t *testing.T, b []byte, fds int) {
		m, err := Decode(b, fds)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		if m.Kind != "snapshot-sent" && m.UID == "" {
			t.Fatalf("accepted %s without uid", m.Kind)
		}
		if (m.Kind == "add") != (fds == 1) || (m.Kind != "add" && fds != 0) {
			t.Fatalf("accepted %s with %d fds", m.Kind, fds)
		}
	})
}
