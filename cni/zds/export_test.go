package zds

import "net"

// SeqpacketDial lets external tests speak raw datagrams to the server.
var SeqpacketDial = seqpacketDialForTest

// SetStarted replaces how s tells when a connecting ztunnel started; call it before
// Run.
func SetStarted(s *Server, f func() uint64) { s.started = func(*net.UnixConn) uint64 { return f() } }

// PeerStart and StatStart expose the start-time lookup.
var (
	PeerStart = peerStart
	StatStart = statStart
)
