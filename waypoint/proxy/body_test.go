package proxy

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReplayBodyRetriesFromStart(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader("hello world")), 64)
	first := b.attempt()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("first attempt read %q %v", buf, err)
	}
	second := b.attempt()
	if _, err := first.Read(buf); !errors.Is(err, errStaleBody) {
		t.Fatalf("old attempt read after a new one: %v", err)
	}
	all, err := io.ReadAll(second)
	if err != nil || string(all) != "hello world" {
		t.Fatalf("second attempt read %q %v", all, err)
	}
	if body, ok := b.complete(); !ok || string(body) != "hello world" {
		t.Fatalf("complete = %q %v", body, ok)
	}
}

func TestReplayBodyTooLargeIsNotReplayable(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
	all, err := io.ReadAll(b.attempt())
	if err != nil || len(all) != 100 {
		t.Fatalf("streamed %d bytes, %v", len(all), err)
	}
	if b.replayable() {
		t.Fatal("a body larger than the buffer is replayable")
	}
	if _, err := b.attempt().Read(make([]byte, 1)); !errors.Is(err, errNotReplayable) {
		t.Fatalf("replay of an overflowed body: %v", err)
	}
	if _, ok := b.complete(); ok {
		t.Fatal("overflowed body reported complete")
	}
}
