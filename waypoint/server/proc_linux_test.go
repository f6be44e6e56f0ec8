package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambit-mesh/ambit/waypoint/model"
)

// Child processes the benchmarks start and measure from /proc: haproxy,
// and the waypoint itself (cmd/waypoint), so that each proxy's CPU and
// memory are its own process's.

// proc is a child process, killed at cleanup.
type proc struct {
	name string
	pid  int
}

// startProc runs bin with args and waits until ready succeeds (up to 10 s);
// it fails tb with the process's output if the process exits first.
func startProc(tb testing.TB, name, bin string, args []string, ready func() error) proc {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := ready()
		if err == nil {
			break
		}
		select {
		case <-exited:
			tb.Fatalf("%s exited: %s", name, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready: %v\n%s", name, err, out.String())
		}
	}
	return proc{name: name, pid: cmd.Process.Pid}
}

// freeAddr returns a loopback address with a port free now; the child
// binds it next (a race with another binder fails loudly in startProc).
func freeAddr(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func dialable(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// waypointProc is cmd/waypoint running as a child.
type waypointProc struct {
	proc
	hbone   netip.AddrPort
	metrics string // base URL
}

// startWaypointProc builds cmd/waypoint and runs it in static mode as m's
// waypoint (its identity, certified by m's CA) with snap, access log off
// (-log-level warn) and no span export, as a waypoint without a collector.
func startWaypointProc(tb testing.TB, m *mesh, snap *model.Snapshot) waypointProc {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("the go command is needed to build cmd/waypoint: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "waypoint")
	if out, err := exec.Command(goBin, "build", "-o", bin, "github.com/ambit-mesh/ambit/cmd/waypoint").CombinedOutput(); err != nil {
		tb.Fatalf("go build cmd/waypoint: %v\n%s", err, out)
	}
	return runWaypointProc(tb, m, snap, "waypoint", bin)
}

// runWaypointProc runs the waypoint binary bin as startWaypointProc does.
func runWaypointProc(tb testing.TB, m *mesh, snap *model.Snapshot, name, bin string) waypointProc {
	tb.Helper()
	dir := tb.TempDir()
	svid, err := m.svids.SVID(tb.Context(), m.wpID)
	if err != nil {
		tb.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	bundlePEM, err := m.ca.Bundle().Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	snap.Gateway = model.Ref{Kind: model.KindGateway, Namespace: "demo", Name: "waypoint"}
	snapJSON, err := json.Marshal(snap)
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "bundle.pem": bundlePEM, "snapshot.json": snapJSON}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	wp := waypointProc{hbone: freeAddr(tb)}
	metrics, health := freeAddr(tb), freeAddr(tb)
	wp.metrics = "http://" + metrics.String()
	wp.proc = startProc(tb, name, bin, []string{
		"-identity", m.wpID.String(),
		"-cert", filepath.Join(dir, "cert.pem"), "-key", filepath.Join(dir, "key.pem"),
		"-bundle", filepath.Join(dir, "bundle.pem"), "-config", filepath.Join(dir, "snapshot.json"),
		"-hbone-addr", wp.hbone.String(), "-metrics-addr", metrics.String(),
		"-health-addr", health.String(), "-admin-addr", "-", "-log-level", "warn",
	}, func() error {
		resp, err := http.Get("http://" + health.String() + "/healthz/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readiness %s", resp.Status)
		}
		return nil
	})
	return wp
}

// metric returns the value of the unlabeled Prometheus sample name.
func (wp waypointProc) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	resp, err := http.Get(wp.metrics + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	tb.Fatalf("metric %s not found (%v)", name, sc.Err())
	return 0
}

// clockTick is the unit of /proc/<pid>/stat times (USER_HZ).
const clockTick = 10 * time.Millisecond

// procCPU is the user and system CPU pid has used.
func procCPU(tb testing.TB, pid int) (user, sys time.Duration) {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the ")" closing the command name: state is the first,
	// utime and stime the 12th and 13th.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var t [2]time.Duration
	for i, s := range f[11:13] {
		ticks, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		t[i] = time.Duration(ticks) * clockTick
	}
	return t[0], t[1]
}

// procSwitches is the number of context switches (voluntary and not) of
// all of pid's threads alive now.
func procSwitches(tb testing.TB, pid int) float64 {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("/proc/%d/task: %v", pid, err)
	}
	var n float64
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // the thread exited
		}
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				c, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					tb.Fatalf("%s: %q: %v", task, line, err)
				}
				n += c
			}
		}
	}
	return n
}

// selfCPU is the user+system CPU this process has used.
func selfCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procMemory returns VmRSS (resident now) and VmHWM (peak resident) of pid,
// in bytes.
func procMemory(tb testing.TB, pid int) (rss, peak float64) {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	kib := func(line string) float64 {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(line), " kB"), 64)
		if err != nil {
			tb.Fatalf("/proc/%d/status: %q: %v", pid, line, err)
		}
		return v * 1024
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			rss = kib(v)
		} else if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			peak = kib(v)
		}
	}
	if rss == 0 || peak == 0 {
		tb.Fatalf("/proc/%d/status: no VmRSS/VmHWM (%v)", pid, sc.Err())
	}
	return rss, peak
}
