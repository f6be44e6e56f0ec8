package hbone

import (
	"errors"
	"fmt"
	"net/http"

	"golang.org/x/net/http2"
)

// Errors a Handler returns to refuse a tunnel, and that Client.Dial returns
// (inside a *StatusError) when the server refused it. A Handler wraps them
// to add detail, which stays in the server's logs: the client sees only the
// status code.
var (
	// ErrBadRequest means the CONNECT request was malformed (HTTP 400).
	ErrBadRequest = errors.New("hbone: bad request")
	// ErrDenied means policy forbids the tunnel (HTTP 401).
	ErrDenied = errors.New("hbone: denied by policy")
	// ErrUnreachable means the server could not reach the destination
	// (HTTP 503). A Handler error that wraps none of these sentinels is
	// answered with 503 too. Client.Dial also wraps it, without a
	// StatusError, when it cannot reach the HBONE server itself.
	ErrUnreachable = errors.New("hbone: destination unreachable")
)

// Errors of the client and of streams.
var (
	// ErrIdentityMismatch means the server proved an identity other than
	// the expected destination identity.
	ErrIdentityMismatch = errors.New("hbone: server identity mismatch")
	// ErrStreamReset means the peer reset the stream (RST_STREAM); the
	// error carries the HTTP/2 error code.
	ErrStreamReset = errors.New("hbone: stream reset by peer")
	// ErrConnClosed means the HTTP/2 connection under a stream ended.
	ErrConnClosed = errors.New("hbone: connection closed")
	// ErrClientClosed is returned by Client.Dial after Client.Close.
	ErrClientClosed = errors.New("hbone: client closed")
	// errRefused means the server did not process the stream (GOAWAY or
	// REFUSED_STREAM), so opening it again elsewhere is safe.
	errRefused = errors.New("hbone: stream refused, not processed")
)

// StatusError is the error Client.Dial returns when the server answers the
// CONNECT request with a status other than 200. errors.Is matches it
// against ErrBadRequest (400), ErrDenied (401) and ErrUnreachable (503).
type StatusError struct {
	Code int
}

// Error says which status the server answered.
func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: server answered %d %s", e.Code, http.StatusText(e.Code))
}

// Is reports whether the status code is the one target stands for.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.Code == http.StatusBadRequest
	case ErrDenied:
		return e.Code == http.StatusUnauthorized
	case ErrUnreachable:
		return e.Code == http.StatusServiceUnavailable
	}
	return false
}

// statusFor maps a Handler's refusal to the status sent to the client.
func statusFor(err error) int {
	switch {
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrDenied):
		return http.StatusUnauthorized
	default:
		return http.StatusServiceUnavailable
	}
}

// resetError reports an RST_STREAM received from the peer.
type resetError struct {
	code http2.ErrCode
}

func (e resetError) Error() string { return fmt.Sprintf("%v (%v)", ErrStreamReset, e.code) }
func (e resetError) Unwrap() []error {
	if e.code == http2.ErrCodeRefusedStream {
		return []error{ErrStreamReset, errRefused}
	}
	return []error{ErrStreamReset}
}
