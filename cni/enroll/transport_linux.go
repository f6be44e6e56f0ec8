package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/ambit-mesh/ambit/cni/seqpacket"
)

// ErrUnreachable wraps failures to reach the agent at all (as opposed to the agent
// answering with a failure).
var ErrUnreachable = errors.New("node agent unreachable")

// Call sends req (with netns for ADD and CHECK) to the agent at path and waits for its
// answer until ctx ends.
func Call(ctx context.Context, path string, req Request, netns *os.File) (Response, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c, err := seqpacket.Dial(path, timeout)
	if err != nil {
		return Response{}, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return Response{}, err
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	if err := seqpacket.Send(c, b, netns); err != nil {
		return Response{}, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	rb, files, err := seqpacket.Recv(c)
	if err != nil {
		return Response{}, fmt.Errorf("%w: no answer: %w", ErrUnreachable, err)
	}
	seqpacket.CloseAll(files)
	return DecodeResponse(rb)
}

// Handler decides a request. netns is open for ADD and CHECK and closed by the server
// after the handler returns (the handler duplicates it to keep it).
type Handler func(ctx context.Context, req Request, netns *os.File) (Outcome, error)

// Server serves the plugin's socket.
type Server struct {
	path    string
	handler Handler
	log     *slog.Logger
}

// NewServer returns a server for path. It does no I/O until Run.
func NewServer(path string, h Handler, log *slog.Logger) *Server {
	return &Server{path: path, handler: h, log: log}
}

// Run serves until ctx ends; each request is handled on its own goroutine.
func (s *Server) Run(ctx context.Context) error {
	ln, err := seqpacket.Listen(s.path)
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	s.log.Info("serving CNI plugin", "socket", s.path)
	err = seqpacket.Serve(ctx, ln, func(ctx context.Context, c *net.UnixConn) {
		defer c.Close()
		s.serve(ctx, c)
	})
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	return nil
}

func (s *Server) serve(ctx context.Context, c *net.UnixConn) {
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return
	}
	b, files, err := seqpacket.Recv(c)
	if err != nil {
		s.log.Warn("plugin request", "err", err)
		return
	}
	defer seqpacket.CloseAll(files)
	resp := Response{}
	req, err := DecodeRequest(b, len(files))
	if err == nil {
		var netns *os.File
		if len(files) == 1 {
			netns = files[0]
		}
		resp.Outcome, err = s.handler(ctx, req, netns)
	}
	if err != nil {
		resp = Response{Outcome: Failed, Error: err.Error()}
	}
	out, _ := json.Marshal(resp)
	if err := seqpacket.Send(c, out, nil); err != nil {
		s.log.Warn("answer plugin", "pod", req.PodName, "namespace", req.PodNamespace, "err", err)
	}
}
