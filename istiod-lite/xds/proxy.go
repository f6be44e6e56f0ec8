package xds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// ProxyKind is the kind of a subscriber.
type ProxyKind int

// Kinds of subscribers.
const (
	Ztunnel ProxyKind = iota + 1
	Waypoint
)

// String names the kind as in node ids.
func (k ProxyKind) String() string {
	switch k {
	case Ztunnel:
		return "ztunnel"
	case Waypoint:
		return "waypoint"
	}
	return "unknown"
}

// Proxy is a subscriber as identified by its node id.
type Proxy struct {
	ID   string
	Kind ProxyKind
	// Node is the Kubernetes node of a ztunnel.
	Node string
	// Waypoint is the Gateway of a waypoint.
	Waypoint model.Ref
}

// ErrBadNodeID is returned for a node id that names no known kind of proxy.
var ErrBadNodeID = errors.New(`node id must be "ztunnel~<node>" or "waypoint~<namespace>~<name>"`)

// ParseProxyID reads a node id.
func ParseProxyID(id string) (Proxy, error) {
	parts := strings.Split(id, "~")
	switch {
	case len(parts) == 2 && parts[0] == "ztunnel" && parts[1] != "":
		return Proxy{ID: id, Kind: Ztunnel, Node: parts[1]}, nil
	case len(parts) == 3 && parts[0] == "waypoint" && parts[1] != "" && parts[2] != "":
		return Proxy{ID: id, Kind: Waypoint, Waypoint: model.Ref{Namespace: parts[1], Name: parts[2]}}, nil
	}
	return Proxy{}, fmt.Errorf("%w, got %q", ErrBadNodeID, id)
}

// view is what the proxy may receive from a model.
func (p Proxy) view(m *model.Model) model.Resources {
	if p.Kind == Waypoint {
		return m.ForWaypoint(p.Waypoint)
	}
	return m.ForNode(p.Node)
}

// ProxyAuthorizer decides whether the caller of a stream (known from its gRPC
// context, e.g. a ServiceAccount token) may subscribe as p.
type ProxyAuthorizer interface {
	AuthorizeProxy(ctx context.Context, p Proxy) error
}

// Observer is told about the server's activity (metrics). Calls must not block.
type Observer interface {
	Connected(p Proxy)
	Disconnected(p Proxy)
	// Pushed reports a response sent after a model update, with the time since the
	// update was handed to the server.
	Pushed(p Proxy, typeURL string, resources int, latency time.Duration)
	// Rejected reports a NACK.
	Rejected(p Proxy, typeURL, detail string)
}
