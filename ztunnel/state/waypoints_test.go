package state

import (
	"net/netip"
	"slices"
	"testing"
)

func TestWaypointsIncludeThoseOfServedServices(t *testing.T) {
	own := &Waypoint{Address: netip.MustParseAddr("10.0.0.9"), Port: 15008}
	svcWP := &Waypoint{Service: "demo/waypoint.demo.svc.cluster.local", Port: 15008}
	tables := NewTables()
	tables.UpsertService(&Service{Name: "bound", Namespace: "demo", Hostname: "bound.demo.svc.cluster.local", Waypoint: svcWP})
	tables.UpsertService(&Service{Name: "free", Namespace: "demo", Hostname: "free.demo.svc.cluster.local"})

	for _, tc := range []struct {
		name string
		w    *Workload
		want []*Waypoint
	}{
		{"unbound", &Workload{Services: map[string][]Port{"demo/free.demo.svc.cluster.local": nil}}, nil},
		{"own waypoint", &Workload{Waypoint: own}, []*Waypoint{own}},
		{"endpoint of a bound service", &Workload{Services: map[string][]Port{
			"demo/free.demo.svc.cluster.local":  nil,
			"demo/bound.demo.svc.cluster.local": nil,
		}}, []*Waypoint{svcWP}},
		{"both", &Workload{Waypoint: own, Services: map[string][]Port{"demo/bound.demo.svc.cluster.local": nil}}, []*Waypoint{own, svcWP}},
		{"unknown service", &Workload{Services: map[string][]Port{"demo/gone.demo.svc.cluster.local": nil}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tables.Waypoints(tc.w); !slices.Equal(got, tc.want) {
				t.Errorf("Waypoints = %v, want %v", got, tc.want)
			}
		})
	}
}
