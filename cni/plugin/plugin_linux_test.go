package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/ambit-mesh/ambit/cni/enroll"
	"github.com/ambit-mesh/ambit/cni/netns"
)

const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],` +
	`"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}]}`

func conf(socket, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"net","type":"ambit-cni","agentSocket":%q,"timeoutSeconds":2%s,"prevResult":%s}`,
		socket, extra, prevResult))
}

// fakeAgent answers plugin requests with outcome/err and records them.
type fakeAgent struct {
	mu      sync.Mutex
	reqs    []enroll.Request
	hadNS   []bool
	outcome enroll.Outcome
	err     error
}

func (a *fakeAgent) handle(_ context.Context, r enroll.Request, ns *os.File) (enroll.Outcome, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, r)
	a.hadNS = append(a.hadNS, ns != nil && netns.Check(ns) == nil)
	return a.outcome, a.err
}

func startAgent(t *testing.T, a *fakeAgent) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cni.sock")
	s := enroll.NewServer(path, a.handle, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	for range 100 {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("agent socket never appeared")
	return ""
}

const podArgsStr = "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=echo-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=0b6f2a3e-1c2d-4e5f-8a9b-0123456789ab"

func TestAdd(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	tests := []struct {
		name      string
		agent     *fakeAgent // nil: no agent listening
		stdin     func(sock string) []byte
		args      string
		netns     string
		wantCode  uint // 0: success
		wantPass  bool // prevResult printed
		wantCalls int
	}{
		{name: "ambient pod enrolled", agent: &fakeAgent{outcome: enroll.Enrolled}, args: podArgsStr, wantPass: true, wantCalls: 1},
		{name: "not ambient passes through", agent: &fakeAgent{outcome: enroll.NotAmbient}, args: podArgsStr, wantPass: true, wantCalls: 1},
		{name: "enrollment failed", agent: &fakeAgent{outcome: enroll.Failed, err: errors.New("nft: boom")}, args: podArgsStr, wantCode: types.ErrInternal, wantCalls: 1},
		{name: "agent unreachable fails closed", args: podArgsStr, wantCode: types.ErrTryAgainLater},
		{name: "kube-system never needs the agent", args: strings.Replace(podArgsStr, "=demo", "=kube-system", 1), wantPass: true},
		{name: "not a kubernetes pod", args: "", wantPass: true},
		{name: "missing netns", agent: &fakeAgent{outcome: enroll.Enrolled}, args: podArgsStr, netns: "/nonexistent/netns", wantCode: types.ErrInvalidNetNS},
		{name: "netns path is not a namespace", agent: &fakeAgent{outcome: enroll.Enrolled}, args: podArgsStr, netns: "/proc/self/status", wantCode: types.ErrInvalidNetNS},
		{name: "not chained", agent: &fakeAgent{outcome: enroll.Enrolled}, args: podArgsStr,
			stdin: func(string) []byte { return []byte(`{"cniVersion":"1.0.0","name":"net","type":"ambit-cni"}`) }, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad cniVersion", args: podArgsStr,
			stdin: func(string) []byte { return []byte(`{"cniVersion":"one","name":"net","type":"ambit-cni"}`) }, wantCode: types.ErrInvalidNetworkConfig},
		{name: "bad CNI_ARGS", agent: &fakeAgent{}, args: "K8S_POD_NAME", wantCode: types.ErrInvalidEnvironmentVariables},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := missing
			if tt.agent != nil {
				sock = startAgent(t, tt.agent)
			}
			stdin := conf(sock, "")
			if tt.stdin != nil {
				stdin = tt.stdin(sock)
			}
			ns := "/proc/self/ns/net"
			if tt.netns != "" {
				ns = tt.netns
			}
			var out bytes.Buffer
			p := Plugin{Stdout: &out, Log: slog.New(slog.DiscardHandler)}
			err := p.Add(&skel.CmdArgs{ContainerID: "abc", Netns: ns, IfName: "eth0", Args: tt.args, StdinData: stdin})
			checkCode(t, err, tt.wantCode)
			if tt.wantPass {
				var r map[string]any
				if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil || r["ips"] == nil {
					t.Errorf("prevResult not passed on: %q", out.String())
				}
			} else if out.Len() != 0 {
				t.Errorf("unexpected output %q", out.String())
			}
			if tt.agent != nil {
				tt.agent.mu.Lock()
				defer tt.agent.mu.Unlock()
				if len(tt.agent.reqs) != tt.wantCalls {
					t.Fatalf("agent got %d requests, want %d", len(tt.agent.reqs), tt.wantCalls)
				}
				if tt.wantCalls == 1 {
					r := tt.agent.reqs[0]
					if r.Command != enroll.Add || r.PodNamespace != "demo" || r.PodName != "echo-1" ||
						r.PodUID == "" || len(r.IPs) != 1 || r.IPs[0] != "10.244.1.5" || !tt.agent.hadNS[0] {
						t.Errorf("request = %+v (netns passed: %v)", r, tt.agent.hadNS[0])
					}
				}
			}
		})
	}
}

func checkCode(t *testing.T, err error, want uint) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	}
	var cerr *types.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v (%T), want CNI error code %d", err, err, want)
	}
	if cerr.Code != want {
		t.Fatalf("CNI error code %d (%s: %s), want %d", cerr.Code, cerr.Msg, cerr.Details, want)
	}
}

func TestDelNeverFailsForAnAbsentAgent(t *testing.T) {
	p := Plugin{Stdout: &bytes.Buffer{}, Log: slog.New(slog.DiscardHandler)}
	sock := filepath.Join(t.TempDir(), "nothing.sock")
	if err := p.Del(&skel.CmdArgs{ContainerID: "abc", Args: podArgsStr, StdinData: conf(sock, "")}); err != nil {
		t.Fatalf("Del = %v", err)
	}
	// DEL may come without prevResult and without netns.
	a := &fakeAgent{outcome: enroll.Released}
	sock = startAgent(t, a)
	stdin := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"net","type":"ambit-cni","agentSocket":%q}`, sock))
	if err := p.Del(&skel.CmdArgs{ContainerID: "abc", Args: podArgsStr, StdinData: stdin}); err != nil {
		t.Fatalf("Del = %v", err)
	}
	if len(a.reqs) != 1 || a.reqs[0].Command != enroll.Del || a.hadNS[0] {
		t.Errorf("agent got %+v", a.reqs)
	}
}

func TestCheckAndStatus(t *testing.T) {
	p := Plugin{Stdout: &bytes.Buffer{}, Log: slog.New(slog.DiscardHandler)}
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	args := &skel.CmdArgs{ContainerID: "abc", Netns: "/proc/self/ns/net", Args: podArgsStr, StdinData: conf(missing, "")}
	checkCode(t, p.Check(args), types.ErrTryAgainLater)
	checkCode(t, p.Status(args), types.ErrPluginNotAvailable)

	a := &fakeAgent{outcome: enroll.Failed, err: errors.New("rules missing")}
	args.StdinData = conf(startAgent(t, a), "")
	checkCode(t, p.Check(args), types.ErrInternal)
	checkCode(t, p.Status(args), 0)
	a.outcome, a.err = enroll.Enrolled, nil
	checkCode(t, p.Check(args), 0)
}
