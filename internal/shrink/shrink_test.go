package shrink

import (
	"maps"
	"runtime"
	"testing"
)

func TestMapRebuildsBelowAnEighthOfItsPeak(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range 10000 {
		m[i] = i
		m = Map(m, &peak)
	}
	if peak != 10000 {
		t.Fatalf("peak %d after 10,000 inserts", peak)
	}
	before := m
	for i := range 8750 { // 1,250 left: exactly an eighth, kept
		delete(m, i)
		m = Map(m, &peak)
	}
	if !sameMap(m, before) {
		t.Fatal("rebuilt at an eighth of the peak")
	}
	delete(m, 8750)
	m = Map(m, &peak)
	if sameMap(m, before) || peak != 1249 || len(m) != 1249 {
		t.Fatalf("below an eighth: same map %v, peak %d, len %d; want a copy with peak 1249", sameMap(m, before), peak, len(m))
	}
	want := map[int]int{}
	for i := 8751; i < 10000; i++ {
		want[i] = i
	}
	if !maps.Equal(m, want) {
		t.Fatal("the copy lost or changed entries")
	}
}

func TestMapLeavesSmallMapsAlone(t *testing.T) {
	m := map[int]int{}
	peak := 0
	for i := range MinPeak - 1 {
		m[i] = i
		m = Map(m, &peak)
	}
	before := m
	for i := range MinPeak - 2 {
		delete(m, i)
		m = Map(m, &peak)
	}
	if !sameMap(m, before) {
		t.Fatal("a map that never reached MinPeak was rebuilt")
	}
}

// The point of it: the room goes back to the heap.
func TestMapGivesBackTheRoom(t *testing.T) {
	live := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	m := map[int]*int{}
	peak := 0
	for i := range 200000 {
		m[i] = nil
		m = Map(m, &peak)
	}
	for i := range 199000 {
		delete(m, i)
	}
	withRoom := live()
	m = Map(m, &peak)
	shrunk := live()
	if len(m) != 1000 || withRoom < shrunk+2<<20 {
		t.Fatalf("heap %d bytes with the big map's room, %d after; want at least 2 MiB back", withRoom, shrunk)
	}
	runtime.KeepAlive(m)
}

func sameMap(a, b map[int]int) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	// Maps are references: writing through one shows in the other.
	k := -1
	a[k] = 1
	_, ok := b[k]
	delete(a, k)
	return ok
}
