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

// Bytes are a connection's byte counts: Sent is what the client sent,
// Received what it got back.
type Bytes struct{ Sent, Received int64 }

// Observer is told about connections (metrics, access logs). Calls must
// not block. Opened is called only for connections policy admitted.
// Between Progress and Closed every byte is reported once.
type Observer interface {
	Opened(c *ConnInfo)
	// Progress reports bytes an open connection copied since they were
	// last reported, when Proxy.ReportProgress asks (a metrics scrape).
	Progress(c *ConnInfo, b Bytes)
	// Closed reports a finished connection: its totals, and the part of
	// them no Progress reported (the observer adds it as it adds
	// Progress's).
	Closed(c *ConnInfo, total, unreported Bytes, err error)
	// Refused reports a connection refused (policy, readiness, errors).
	Refused(c *ConnInfo, reason error)
}

type nopObserver struct{}

func (nopObserver) Opened(*ConnInfo)                      {}
func (nopObserver) Progress(*ConnInfo, Bytes)             {}
func (nopObserver) Closed(*ConnInfo, Bytes, Bytes, error) {}
func (nopObserver) Refused(*ConnInfo, error)              {}
