package reconnect

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDoublesWithinBoundsAndStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var got []time.Duration
		err := Loop(ctx, time.Second, 5*time.Second,
			func(context.Context) error { return errors.New("down") },
			func(_ error, b time.Duration) {
				got = append(got, b)
				if len(got) == 5 {
					cancel()
				}
			})
		if err != nil {
			t.Fatalf("Loop = %v, want nil after cancel", err)
		}
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("backoffs %v, want %v", got, want)
			}
		}
	})
}

func TestLongSessionResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		runs := 0
		var got []time.Duration
		_ = Loop(ctx, time.Second, 5*time.Second,
			func(context.Context) error {
				runs++
				if runs == 3 {
					time.Sleep(10 * time.Second) // a session that worked for a while
				}
				return errors.New("down")
			},
			func(_ error, b time.Duration) {
				got = append(got, b)
				if len(got) == 3 {
					cancel()
				}
			})
		if want := []time.Duration{time.Second, 2 * time.Second, time.Second}; got[2] != want[2] || got[1] != want[1] {
			t.Fatalf("backoffs %v, want %v", got, want)
		}
	})
}
