package zds

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// peerStart returns when the process at the other end of c started, in clock ticks
// since boot (field 22 of proc/<pid>/stat, the pid from SO_PEERCRED, which the kernel
// gives in the agent's PID namespace: the host's, the agent runs with hostPID).
func peerStart(proc string, c *net.UnixConn) (uint64, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(int(cred.Pid)), "stat"))
	if err != nil {
		return 0, err
	}
	return statStart(b)
}

// statStart parses the start time out of a proc/<pid>/stat line. The command name
// (field 2) is in parentheses and may hold spaces and parentheses itself, so fields
// are counted from the last ')'.
func statStart(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // f[0] is field 3 (state)
	if len(f) <= startField {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	v, err := strconv.ParseUint(string(f[startField]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: start time: %w", err)
	}
	return v, nil
}
