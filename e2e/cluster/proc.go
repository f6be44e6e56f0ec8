package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is a long-running process of the cluster.
type daemon struct {
	Name  string   // unique; names the log and pid files
	Argv  []string // command and arguments
	Netns string   // network namespace name to run in, or "" for the host's
	Mntns string   // mount namespace file to run in, or ""
	// Cgroups are cgroup directories (one per hierarchy) the process joins before it
	// execs, so that everything it forks can be found and killed at Down.
	Cgroups []string
}

// pidRecord identifies a process we started: a pid alone may be reused after it exits.
type pidRecord struct {
	Pid   int
	Start uint64 // field 22 of /proc/<pid>/stat
}

func (c Config) pidFile(name string) string { return filepath.Join(c.runDir(), name+".pid") }

// start launches d detached from this process (its own session, output to its log file)
// and records its pid. The cluster outlives the command that started it.
func (c Config) start(d daemon) error {
	if err := os.MkdirAll(c.logDir(), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(c.runDir(), 0o755); err != nil {
		return err
	}
	argv := d.Argv
	if d.Netns != "" || d.Mntns != "" {
		ns := []string{"nsenter"}
		if d.Netns != "" {
			ns = append(ns, "--net="+netnsPath(d.Netns))
		}
		if d.Mntns != "" {
			ns = append(ns, "--mount="+d.Mntns)
		}
		argv = append(append(ns, "--"), argv...)
	}
	if len(d.Cgroups) > 0 {
		wrap := []string{c.Helper, execInCgroupsCmd}
		for _, cg := range d.Cgroups {
			wrap = append(wrap, "--cgroup="+cg)
		}
		argv = append(append(wrap, "--"), argv...)
	}
	logf, err := os.OpenFile(filepath.Join(c.logDir(), d.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Name, err)
	}
	pid := cmd.Process.Pid
	st, err := procStart(pid)
	if err != nil {
		return fmt.Errorf("start %s: read its start time: %w", d.Name, err)
	}
	// Reap the child if it exits while we still run; after we exit init adopts it.
	go func() { _ = cmd.Wait() }()
	rec := fmt.Sprintf("%d %d\n", pid, st)
	return os.WriteFile(c.pidFile(d.Name), []byte(rec), 0o644)
}

// procStart returns the start time of pid in clock ticks since boot.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after the last ')' are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 overall
}

// running returns the live process recorded under name, if any.
func (c Config) running(name string) (pidRecord, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return pidRecord{}, false
	}
	var r pidRecord
	if _, err := fmt.Sscanf(string(b), "%d %d", &r.Pid, &r.Start); err != nil {
		return pidRecord{}, false
	}
	st, err := procStart(r.Pid)
	if err != nil || st != r.Start || isZombie(r.Pid) {
		return pidRecord{}, false
	}
	return r, true
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] == 'Z'
}

// stop signals the recorded process with SIGTERM, then SIGKILL after grace, and waits
// for it to go. A record whose process is gone (or is another process now) is removed.
func (c Config) stop(ctx context.Context, name string, grace time.Duration) error {
	r, ok := c.running(name)
	if !ok {
		_ = os.Remove(c.pidFile(name))
		return nil
	}
	_ = syscall.Kill(r.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for {
		if _, ok := c.running(name); !ok {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(r.Pid, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
			grace = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if grace == 0 && time.Now().After(deadline) {
			return fmt.Errorf("stop %s: pid %d did not exit after SIGKILL", name, r.Pid)
		}
	}
	return os.Remove(c.pidFile(name))
}

// execInCgroupsCmd is the hidden subcommand that joins cgroups and execs a command; see
// ExecInCgroups.
const execInCgroupsCmd = "__exec-in-cgroups"

// ExecInCgroupsCommand reports whether args (without the program name) ask for the
// hidden cgroup-joining exec wrapper, which main must dispatch to ExecInCgroups before
// anything else.
func ExecInCgroupsCommand(args []string) bool {
	return len(args) > 0 && args[0] == execInCgroupsCmd
}

// ExecInCgroups writes the calling process into each --cgroup=DIR and then execs the
// command after "--". Joining before exec means nothing the command forks can escape.
func ExecInCgroups(args []string) error {
	args = args[1:]
	for len(args) > 0 && args[0] != "--" {
		dir, ok := strings.CutPrefix(args[0], "--cgroup=")
		if !ok {
			return fmt.Errorf("%s: unexpected argument %q", execInCgroupsCmd, args[0])
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", dir, err)
		}
		args = args[1:]
	}
	if len(args) < 2 {
		return errors.New(execInCgroupsCmd + ": no command after --")
	}
	path, err := exec.LookPath(args[1])
	if err != nil {
		return err
	}
	return syscall.Exec(path, args[1:], os.Environ())
}
