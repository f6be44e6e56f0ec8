package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

func TestReapCollectsExitedChildren(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)

	// The test binary itself, running no tests, exits at once.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sigs:
	case <-time.After(30 * time.Second):
		t.Fatal("no SIGCHLD from the child")
	}
	reap()
	// Had reap left the zombie, Wait would collect it and succeed.
	if err := cmd.Wait(); !errors.Is(err, syscall.ECHILD) {
		t.Fatalf("Wait after reap = %v, want ECHILD: reap did not collect the child", err)
	}
}
