package hbone

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// testLinger is the Bridges' linger in these tests: short, so that they
// park soon after the traffic stops.
const testLinger = 20 * time.Millisecond

type relayResult struct {
	aToB, bToA int64
	err        error
}

// startBridge starts a Bridge between a and b with testLinger.
func startBridge(t *testing.T, a, b io.ReadWriteCloser) (*Bridge, <-chan relayResult) {
	t.Helper()
	done := make(chan relayResult, 1)
	br := NewBridge(a, b)
	br.linger = testLinger
	br.Start(func(ab, ba int64, err error) { done <- relayResult{ab, ba, err} })
	return br, done
}

func waitResult(t *testing.T, done <-chan relayResult) relayResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(failTimeout):
		t.Fatal("the bridge did not end")
		return relayResult{}
	}
}

// bridgeGoroutines counts the goroutines copying for a Bridge: the tests
// run one Bridge at a time.
func bridgeGoroutines() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, fn := range []string{"hbone.(*sockHalf).run", "hbone.(*Stream).drain(", "hbone.(*Bridge).startHalf.func"} {
			if bytes.Contains(g, []byte(fn)) {
				count++
				break
			}
		}
	}
	return count
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestStreamDrainerExitsWhenIdleAndRestartsOnData(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const linger = time.Second
		var out lockedBuffer
		results := make(chan relayResult, 1)
		streams := make(chan *Stream, 1)
		e := newPipeEnv(t, HandlerFunc(func(_ context.Context, req *Incoming) error {
			st, err := req.Hijack()
			if err != nil {
				return err
			}
			st.drainTo(&out, linger, func(n int64, err error) { results <- relayResult{aToB: n, err: err} })
			streams <- st
			return nil
		}))
		st, err := e.client.Dial(context.Background(), Request{Source: clientID, Destination: serverID,
			Server: netip.MustParseAddrPort("10.0.0.1:15008"), Target: target})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer st.Close()
		srv := <-streams
		defer srv.Close()
		synctest.Wait()
		if n := bridgeGoroutines(); n != 0 {
			t.Fatalf("%d drainers before any data, want 0", n)
		}

		for i, msg := range []string{"a", "b"} {
			io.WriteString(st, msg)
			synctest.Wait()
			if got, want := out.String(), "ab"[:i+1]; got != want {
				t.Fatalf("drained %q, want %q", got, want)
			}
			if n := bridgeGoroutines(); n != 1 {
				t.Fatalf("%d drainers after data, want 1", n)
			}
			time.Sleep(linger) // it wrote in this period: it stays
			synctest.Wait()
			if n := bridgeGoroutines(); n != 1 {
				t.Fatalf("%d drainers one linger after data, want 1", n)
			}
			time.Sleep(linger) // a whole period without data: it exits
			synctest.Wait()
			if n := bridgeGoroutines(); n != 0 {
				t.Fatalf("%d drainers two lingers after data, want 0", n)
			}
		}

		st.CloseWrite()
		synctest.Wait()
		select {
		case r := <-results:
			if r.aToB != 2 || r.err != nil {
				t.Errorf("drainTo ended with %d, %v; want 2, nil", r.aToB, r.err)
			}
		default:
			t.Fatal("END_STREAM did not end drainTo")
		}
	})
}
