package hbone

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzServerSession feeds arbitrary bytes, after the client preface, to
// the server side of a session: whatever comes, it must not panic or hang,
// and it must end when the input does.
func FuzzServerSession(f *testing.F) {
	srv := &Server{
		cfg: ServerConfig{Handler: echo, MaxStreams: DefaultMaxStreams, DrainTimeout: time.Second},
		log: slog.New(slog.DiscardHandler),
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- srv.serveSession(context.Background(), server, nil, clientID, srv.log) }()
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, client)
			close(drained)
		}()
		client.Write(append([]byte(http2.ClientPreface), input...))
		client.Close()
		select {
		case <-done:
		case <-time.After(failTimeout):
			t.Fatal("session did not end after its input did")
		}
		<-drained
	})
}

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpora in testdata/fuzz")

// TestFuzzSeedsUpToDate checks the seed corpora in testdata/fuzz against
// the seeds defined here; -update-fuzz-seeds rewrites them.
func TestFuzzSeedsUpToDate(t *testing.T) {
	strs := map[string][]string{
		"FuzzParseAuthority": {"10.0.0.1:80", "[fd00::1]:443", "[::ffff:10.0.0.1]:80", "[fe80::1%eth0]:80", "example.com:80", "10.0.0.1:0"},
		"FuzzParseForwarded": {
			"for=10.0.0.1", `for="[2001:db8:cafe::17]:4711"`, "for=2001:db8::1", "for=192.0.2.43, for=198.51.100.17",
			"proto=http;for=192.0.2.60;by=203.0.113.43", `for="\"x\\\"`, "for=_hidden:_port", "for=unknown",
		},
	}
	for name, seeds := range strs {
		for i, s := range seeds {
			checkSeed(t, name, i, "string("+strconv.Quote(s)+")")
		}
	}
	for i, b := range sessionSeeds() {
		checkSeed(t, "FuzzServerSession", i, "[]byte("+strconv.Quote(string(b))+")")
	}
}

func checkSeed(t *testing.T, fuzzer string, i int, value string) {
	t.Helper()
	path := filepath.Join("testdata", "fuzz", fuzzer, fmt.Sprintf("seed-%02d", i))
	want := "go test fuzz v1\n" + value + "\n"
	if *updateSeeds {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != want {
		t.Errorf("%s is stale or missing (%v): run go test -run TestFuzzSeedsUpToDate -update-fuzz-seeds", path, err)
	}
}

// sessionSeeds are client frame sequences (after the preface): valid
// tunnels and a few classic attacks.
func sessionSeeds() [][]byte {
	frames := func(write func(fr *http2.Framer, hdr func(kv ...string) []byte)) []byte {
		var buf, hbuf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		enc := hpack.NewEncoder(&hbuf)
		hdr := func(kv ...string) []byte {
			hbuf.Reset()
			for i := 0; i+1 < len(kv); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
			}
			return bytes.Clone(hbuf.Bytes())
		}
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		write(fr, hdr)
		return buf.Bytes()
	}
	connect := []string{":method", "CONNECT", ":authority", "10.0.0.7:8080", "forwarded", "for=10.1.2.3", "baggage", "a=b"}
	return [][]byte{
		frames(func(fr *http2.Framer, hdr func(...string) []byte) { // tunnel with data and half-close
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect...), EndHeaders: true})
			fr.WriteData(1, false, []byte("hello"))
			fr.WriteWindowUpdate(0, 1<<20)
			fr.WriteData(1, true, []byte(" world"))
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) { // two streams, a reset, a ping, goaway
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(connect...), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(":method", "GET", ":path", "/"), EndHeaders: true, EndStream: true})
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
			fr.WritePing(false, [8]byte{1, 2, 3})
			fr.WriteGoAway(3, http2.ErrCodeNo, nil)
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) { // headers split over CONTINUATION
			block := hdr(connect...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4]})
			fr.WriteContinuation(1, true, block[4:])
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			fr.WriteData(1, false, []byte("stalled"))
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) { // ping flood
			for i := range 64 {
				fr.WritePing(false, [8]byte{byte(i)})
			}
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) { // window overflow, then DATA on an idle stream
			fr.WriteWindowUpdate(0, 1<<31-1)
			fr.WriteData(5, false, []byte("x"))
		}),
	}
}
