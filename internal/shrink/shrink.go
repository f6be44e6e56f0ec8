// Package shrink gives back the room a long-lived map took at its largest.
//
// A Go map keeps the buckets of its largest size for as long as it lives,
// whatever is deleted. A daemon's per-connection tables (ztunnel's tracked
// connections, the process's parked sockets) would then hold, after a burst
// of 100,000 connections, the room for 100,000 until restart, and the heap
// spans under it.
package shrink

// MinPeak is the smallest peak worth rebuilding a map for.
const MinPeak = 1024

// Map returns m, or a copy of it once it holds fewer than an eighth of
// *peak entries, keeping *peak up to date: call it after every insert and
// delete. The copy costs len(m) and happens at most once per seven eighths
// of a peak deleted.
func Map[K comparable, V any](m map[K]V, peak *int) map[K]V {
	n := len(m)
	if n > *peak {
		*peak = n
		return m
	}
	if *peak < MinPeak || n >= *peak/8 {
		return m
	}
	c := make(map[K]V, n)
	for k, v := range m {
		c[k] = v
	}
	*peak = n
	return c
}
