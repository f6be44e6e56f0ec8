package daemon

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestShouldRelease(t *testing.T) {
	for _, c := range []struct {
		sinceRelease, lastInterval uint64
		want                       bool
	}{
		{ReleaseAfter, 0, true},
		{ReleaseAfter - 1, 0, false},          // no burst since the last release
		{64 << 20, ReleaseAfter/16 - 1, true}, // quiet enough
		{64 << 20, ReleaseAfter / 16, false},  // busy: it would be taken again
		{1 << 30, 1 << 30, false},             // a burst in progress
		{0, 0, false},
	} {
		if got := shouldRelease(c.sinceRelease, c.lastInterval); got != c.want {
			t.Errorf("shouldRelease(%d, %d) = %v, want %v", c.sinceRelease, c.lastInterval, got, c.want)
		}
	}
}

// burst allocates and drops about 64 MiB in small pieces, as 10,000
// connections opening at once do.
func burst() {
	keep := make([][]byte, 0, 16384)
	for range cap(keep) {
		keep = append(keep, make([]byte, 4096))
	}
	runtime.KeepAlive(keep)
}

func TestMemoryReleaserWaitsForQuiet(t *testing.T) {
	m := newMemoryReleaser()
	if m.check() {
		t.Fatal("released with nothing allocated")
	}
	burst()
	if m.check() {
		t.Fatal("released during a burst")
	}
	if !m.check() {
		t.Fatal("not released once quiet after a burst")
	}
	m.released()
	if m.check() {
		t.Fatal("would release again right after a release")
	}
}

func TestReleaseMemoryWhenQuietReturnsABurstsPages(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseMemoryWhenQuiet(ctx, nil, 50*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // its baseline
	burst()
	after := retainedBytes()
	// Without a collection the garbage stays, and the runtime's scavenger
	// keeps free pages up to the heap goal the burst raised.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if retainedBytes()+32<<20 <= after {
			return
		}
	}
	t.Fatalf("retained %d MiB after a 64 MiB burst, %d MiB 5 s later; want at least 32 MiB given back",
		after>>20, retainedBytes()>>20)
}
