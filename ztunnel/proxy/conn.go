package proxy

import (
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/ztunnel/state"
)

// Direction says which side of a connection this ztunnel proxies.
type Direction string

// Directions, as Istio's "reporter" label names them.
const (
	// Outbound: a local pod is the client (reporter "source").
	Outbound Direction = "source"
	// Inbound: a local pod is the server (reporter "destination").
	Inbound Direction = "destination"
)

// ConnInfo describes a proxied connection for telemetry and logs. It is set
// before Observer.Opened and not changed afterwards.
type ConnInfo struct {
	ID        uint64
	Direction Direction
	// Src and Dst are the original client and destination addresses.
	Src netip.Addr
	Dst netip.AddrPort
	// SrcWorkload and DstWorkload are nil when unknown (outside the mesh).
	SrcWorkload, DstWorkload *state.Workload
	// SrcIdentity and DstIdentity are the peers' SPIFFE ids (zero for
	// plaintext).
	SrcIdentity, DstIdentity spiffeid.ID
	// MTLS says the connection was carried over HBONE.
	MTLS bool
	// Via says how an outbound connection left: "hbone", "passthrough", or
	// "waypoint".
	Via   string
	Start time.Time
}

// Observer is told about connections (metrics, access logs). Calls must
// not block. Opened is called only for connections policy admitted.
type Observer interface {
	Opened(c *ConnInfo)
	// Progress adds bytes an open connection copied since its last report:
	// sent is what the client sent, received what it got back. It is
	// called when Proxy.ReportProgress asks (a metrics scrape) and once
	// more as the connection closes, before Closed; every byte is reported
	// once.
	Progress(c *ConnInfo, sent, received int64)
	// Closed reports a finished connection with its totals (already
	// reported through Progress).
	Closed(c *ConnInfo, sent, received int64, err error)
	// Refused reports a connection refused (policy, readiness, errors).
	Refused(c *ConnInfo, reason error)
}

type nopObserver struct{}

func (nopObserver) Opened(*ConnInfo)                      {}
func (nopObserver) Progress(*ConnInfo, int64, int64)      {}
func (nopObserver) Closed(*ConnInfo, int64, int64, error) {}
func (nopObserver) Refused(*ConnInfo, error)              {}
