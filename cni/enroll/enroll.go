// Package enroll is the protocol between the CNI plugin and the node agent. The plugin
// sends one Request per CNI call, with the pod's network namespace descriptor for ADD
// and CHECK (the plugin runs in the node's mount namespace where CNI_NETNS exists; the
// agent's container may not see that path), and waits for one Response. Requests and
// responses are JSON, one per SOCK_SEQPACKET datagram.
package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// Command is the CNI command being handled.
type Command string

// Commands the agent understands.
const (
	Add   Command = "ADD"
	Del   Command = "DEL"
	Check Command = "CHECK"
)

// Outcome is the agent's verdict on a request.
type Outcome string

// Outcomes.
const (
	// Enrolled: the pod is ambient and its redirection is in place.
	Enrolled Outcome = "enrolled"
	// NotAmbient: the pod is not to be captured; nothing was changed.
	NotAmbient Outcome = "not-ambient"
	// Released: the agent forgot the pod (DEL).
	Released Outcome = "released"
	// Failed: see Response.Error.
	Failed Outcome = "failed"
)

// Request is what the plugin asks.
type Request struct {
	Command     Command `json:"command"`
	ContainerID string  `json:"containerID"`
	// Netns is CNI_NETNS, for messages; the namespace itself travels as a descriptor.
	Netns        string   `json:"netns,omitempty"`
	PodNamespace string   `json:"podNamespace"`
	PodName      string   `json:"podName"`
	PodUID       string   `json:"podUID,omitempty"`
	IPs          []string `json:"ips,omitempty"`
}

// Response is the agent's answer.
type Response struct {
	Outcome Outcome `json:"outcome"`
	Error   string  `json:"error,omitempty"`
}

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed enrollment message")

// DecodeRequest parses and validates a request that arrived with fds descriptors.
func DecodeRequest(b []byte, fds int) (Request, error) {
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	want := 0
	switch r.Command {
	case Add, Check:
		want = 1
	case Del:
	default:
		return Request{}, fmt.Errorf("%w: unknown command %q", ErrMalformed, r.Command)
	}
	if fds != want {
		return Request{}, fmt.Errorf("%w: %s with %d file descriptors, want %d", ErrMalformed, r.Command, fds, want)
	}
	if r.PodNamespace == "" || r.PodName == "" {
		return Request{}, fmt.Errorf("%w: pod namespace and name are required", ErrMalformed)
	}
	for _, ip := range r.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return Request{}, fmt.Errorf("%w: pod IP: %w", ErrMalformed, err)
		}
	}
	return r, nil
}

// DecodeResponse parses a response.
func DecodeResponse(b []byte) (Response, error) {
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return Response{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch r.Outcome {
	case Enrolled, NotAmbient, Released:
	case Failed:
		if r.Error == "" {
			return Response{}, fmt.Errorf("%w: failure without error", ErrMalformed)
		}
	default:
		return Response{}, fmt.Errorf("%w: unknown outcome %q", ErrMalformed, r.Outcome)
	}
	return r, nil
}
