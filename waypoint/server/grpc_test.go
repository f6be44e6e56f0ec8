package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/ambit-mesh/ambit/waypoint/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcEcho echoes payloads and sets a trailer, to see trailers survive.
type grpcEcho struct {
	testpb.UnimplementedTestServiceServer
}

func (grpcEcho) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary")); err != nil {
		return nil, err
	}
	if in.GetResponseStatus().GetCode() != 0 {
		return nil, status.Error(codes.Code(in.GetResponseStatus().GetCode()), in.GetResponseStatus().GetMessage())
	}
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (grpcEcho) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	stream.SetTrailer(metadata.Pairs("x-trailer", "stream"))
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

func testGRPCUnaryAndStreamingThroughWaypoint(t *testing.T, nw network) {
	m := newMesh(t, nw)
	p := m.addPodServing("grpc", "grpc", func(ln net.Listener) func() {
		s := grpc.NewServer()
		testpb.RegisterTestServiceServer(s, grpcEcho{})
		go func() { _ = s.Serve(ln) }()
		return s.Stop
	})
	m.update(&model.Snapshot{Services: []model.Service{service("grpc", 1, model.Detect)}, Workloads: []model.Workload{p.workload("grpc")}})
	conn, err := grpc.NewClient("passthrough:///grpc.demo.svc.cluster.local",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return m.dial(ctx, vip(1)) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testpb.NewTestServiceClient(conn)
	ctx := context.Background()

	var trailer metadata.MD
	resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}}, grpc.Trailer(&trailer))
	if err != nil || string(resp.GetPayload().GetBody()) != "hi" {
		t.Fatalf("unary: %v %v", resp, err)
	}
	if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary" {
		t.Errorf("unary trailer %v", trailer)
	}
	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "nope" {
		t.Errorf("unary error status: %v", err)
	}

	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		// Each answer arrives before the next send: nothing is buffered.
		in, err := stream.Recv()
		if err != nil || string(in.GetPayload().GetBody()) != msg {
			t.Fatalf("stream %s: %v %v", msg, in, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	if got := stream.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "stream" {
		t.Errorf("stream trailer %v", stream.Trailer())
	}
	eventually(t, func() bool {
		n := 0
		for _, r := range m.logs.all() {
			if r["protocol"] == "HTTP/2.0" {
				n++
			}
		}
		return n == 3
	})
	if metrics := scrape(t, m); !containsAll(metrics, `grpc_response_status="5"`, `grpc_response_status="0"`, `request_protocol="grpc"`) {
		t.Errorf("gRPC metrics missing in\n%s", metrics)
	}
}
