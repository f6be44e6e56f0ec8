package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func (c Config) cpDir() string { return filepath.Join(c.StateDir, "controlplane") }

// Control-plane daemons in start order; Down stops them in reverse (the API server
// before etcd, or it hangs on shutdown).
var controlPlaneDaemons = []string{"etcd", "kube-apiserver", "api-forward", "kube-controller-manager", "kube-scheduler"}

func (c Config) startEtcd(ctx context.Context) error {
	dir := filepath.Join(c.cpDir(), "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	err := c.start(daemon{Name: "etcd", Netns: c.cpNetns(), Argv: []string{"etcd",
		"--name=ambit", "--data-dir=" + dir,
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=ambit=http://127.0.0.1:2380",
		"--listen-metrics-urls=http://127.0.0.1:2381", "--log-level=warn",
	}})
	if err != nil {
		return err
	}
	return c.waitTCP(ctx, "etcd", "127.0.0.1:2379", 30*time.Second)
}

func (c Config) startAPIServer(ctx context.Context) error {
	p := c.pki
	api := net.JoinHostPort(apiServerAddr.String(), "6443")
	err := c.start(daemon{Name: "kube-apiserver", Netns: c.cpNetns(), Argv: []string{c.kubeBin("kube-apiserver"),
		"--advertise-address=" + apiServerAddr.String(), "--secure-port=6443",
		"--etcd-servers=http://127.0.0.1:2379",
		"--service-cluster-ip-range=" + serviceCIDR.String(),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file=" + p("ca.crt"),
		"--tls-cert-file=" + p("apiserver.crt"), "--tls-private-key-file=" + p("apiserver.key"),
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + p("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc." + clusterDomain,
		"--service-account-key-file=" + p("sa.pub"), "--service-account-signing-key-file=" + p("sa.key"),
		"--requestheader-client-ca-file=" + p("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p("front-proxy-client.crt"), "--proxy-client-key-file=" + p("front-proxy-client.key"),
		"--enable-aggregator-routing=true",
		"--profiling=false", "--v=1",
	}})
	if err != nil {
		return err
	}
	err = c.start(daemon{Name: "api-forward", Argv: []string{c.Helper, forwardCmd,
		"-listen=" + c.apiListen(), "-netns=" + c.cpNetns(), "-to=" + api}})
	if err != nil {
		return err
	}
	if err := c.writeKubeconfig(c.Kubeconfig(), "https://"+c.apiListen(), "admin"); err != nil {
		return err
	}
	return c.waitAPIReady(ctx, 90*time.Second)
}

func (c Config) apiListen() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.APIPort)) }

// inClusterAPI is the API server URL for components inside the cluster's namespaces.
func inClusterAPI() string { return "https://" + net.JoinHostPort(apiServerAddr.String(), "6443") }

func (c Config) startControllers(ctx context.Context) error {
	cmKC := filepath.Join(c.cpDir(), "controller-manager.kubeconfig")
	schedKC := filepath.Join(c.cpDir(), "scheduler.kubeconfig")
	if err := c.writeKubeconfig(cmKC, inClusterAPI(), "controller-manager"); err != nil {
		return err
	}
	if err := c.writeKubeconfig(schedKC, inClusterAPI(), "scheduler"); err != nil {
		return err
	}
	err := c.start(daemon{Name: "kube-controller-manager", Netns: c.cpNetns(), Argv: []string{c.kubeBin("kube-controller-manager"),
		"--kubeconfig=" + cmKC, "--authentication-kubeconfig=" + cmKC, "--authorization-kubeconfig=" + cmKC,
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki("sa.key"),
		"--root-ca-file=" + c.pki("ca.crt"),
		"--cluster-signing-cert-file=" + c.pki("ca.crt"), "--cluster-signing-key-file=" + c.pki("ca.key"),
		"--requestheader-client-ca-file=" + c.pki("front-proxy-ca.crt"),
		"--client-ca-file=" + c.pki("ca.crt"),
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--allocate-node-cidrs=false", "--profiling=false", "--v=1",
	}})
	if err != nil {
		return err
	}
	return c.start(daemon{Name: "kube-scheduler", Netns: c.cpNetns(), Argv: []string{c.kubeBin("kube-scheduler"),
		"--kubeconfig=" + schedKC, "--authentication-kubeconfig=" + schedKC, "--authorization-kubeconfig=" + schedKC,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
	}})
}

// waitTCP waits until addr inside the control-plane namespace accepts connections.
func (c Config) waitTCP(ctx context.Context, what, addr string, timeout time.Duration) error {
	return poll(ctx, what, timeout, func() error {
		if _, ok := c.running(what); !ok {
			return errDied(what, c.logDir())
		}
		conn, err := dialInNetns(ctx, c.cpNetns(), addr)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// waitAPIReady waits for /readyz through the host forward, proving the forward too.
func (c Config) waitAPIReady(ctx context.Context, timeout time.Duration) error {
	client, err := c.adminHTTPClient()
	if err != nil {
		return err
	}
	url := "https://" + c.apiListen() + "/readyz"
	return poll(ctx, "kube-apiserver /readyz", timeout, func() error {
		if _, ok := c.running("kube-apiserver"); !ok {
			return errDied("kube-apiserver", c.logDir())
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		return nil
	})
}

func (c Config) adminHTTPClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(c.pki("admin.crt"), c.pki("admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// errFatal marks an error poll must not retry.
type errFatal struct{ err error }

func (e errFatal) Error() string { return e.err.Error() }
func (e errFatal) Unwrap() error { return e.err }

func errDied(name, logDir string) error {
	return errFatal{fmt.Errorf("%s exited; see %s", name, filepath.Join(logDir, name+".log"))}
}

// poll calls f until it succeeds, returns errFatal, or timeout passes; the last error
// is part of the timeout error so failures say why.
func poll(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if fe := (errFatal{}); errors.As(err, &fe) {
			return fe.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%s): %w", what, timeout, err)
		case <-t.C:
		}
	}
}
