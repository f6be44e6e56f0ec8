// Package hbone implements HBONE, the mesh tunnel of Istio ambient mode: TCP
// streams carried as HTTP/2 CONNECT requests over mutual TLS 1.3 with SPIFFE
// X.509 identities. Ztunnel and the waypoint use it on both ends; it knows
// nothing of either.
//
// A [Client] opens tunnels ([Client.Dial]) over pooled connections, checking
// that the server proves the destination's identity. A [Server] accepts
// connections, verifies the client's certificate chain and hands every
// CONNECT request to a [Handler] that accepts it ([Incoming.Accept]) or
// refuses it with an error mapped to an HTTP status (see [ErrBadRequest],
// [ErrDenied], [ErrUnreachable]). Both ends see a tunnel as a [Stream], a
// net.Conn with half-close ([Stream.CloseWrite]); [Relay] joins a stream to
// another connection.
//
// Frames are read and written with golang.org/x/net/http2's Framer and
// HPACK, but the stream layer is this package's own: x/net's server cannot
// half-close a stream (it resets the request body once the handler returns)
// and neither side of x/net offers per-stream deadlines, both of which a
// tunnel needs. The wire protocol is plain HTTP/2 and interoperates with
// x/net's client and server (see the interop tests).
package hbone
