package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/istiod-lite/authn"
	"github.com/ambit-mesh/ambit/istiod-lite/ca"
	"github.com/ambit-mesh/ambit/istiod-lite/deployer"
	"github.com/ambit-mesh/ambit/istiod-lite/kube"
	"github.com/ambit-mesh/ambit/istiod-lite/metrics"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
	"github.com/ambit-mesh/ambit/istiod-lite/xds"
)

// Server is istiod-lite.
type Server struct {
	cfg Config
}

// New validates the configuration; it does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}, nil
}

// Run serves until ctx ends, then drains for a bounded time.
func (s *Server) Run(ctx context.Context) error {
	cfg, log := s.cfg, s.cfg.Log
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	clients, err := newClients(rc)
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}
	authority, err := ca.LoadOrCreate(ctx, clients.Kube, ca.AuthorityConfig{Namespace: cfg.Namespace, TrustDomain: td})
	if err != nil {
		return fmt.Errorf("certificate authority: %w", err)
	}
	roots := authority.RootsPEM()
	if err := publishRoot(ctx, clients.Kube, cfg.Namespace, roots[0]); err != nil {
		return err
	}
	log.Info("certificate authority ready", "namespace", cfg.Namespace, "trust_domain", td.Name())

	met := metrics.New()
	ctl, err := kube.NewController(clients, kube.ControllerConfig{
		Base: model.Inputs{TrustDomain: cfg.TrustDomain, RootNamespace: cfg.Namespace},
		Log:  log,
	})
	if err != nil {
		return err
	}
	src := ctl.Sources()
	reviewer := authn.NewReviewer(clients.Kube, mesh.TokenAudience, src)
	xdsServer := xds.NewServer(xds.Config{Log: log, Observer: met, Authorizer: proxyAuthorizer{reviewer, cfg.NodeProxies}})
	statusWriter := kube.NewStatusWriter(clients, src, log)
	dep := deployer.New(deployer.Config{
		Kube: clients.Kube, Gateway: clients.Gateway, Gateways: src.Gateways(), Services: src.Services(),
		ServiceAccounts: src.ServiceAccounts(), Pod: cfg.Waypoint, RootCertPEM: roots[0], Log: log,
	})
	ctl.OnModel(xdsServer.Update, met.ModelBuilt, statusWriter.Notify, func(*model.Model) { dep.Notify() })

	caService := ca.NewService(ca.ServiceConfig{Authority: authority, Authn: reviewer, Pods: src,
		NodeProxies: cfg.NodeProxies, DefaultTTL: cfg.CertTTL, MaxTTL: cfg.MaxCertTTL, Log: log})
	certs, err := newServingCerts(authority, td, cfg)
	if err != nil {
		return err
	}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get})),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	xdsServer.Register(g)
	caService.Register(g)

	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return ctl.Run(gctx) })
	grp.Go(func() error { return serveGRPC(gctx, g, cfg.GRPCAddr) })
	health := http.NewServeMux()
	health.HandleFunc("/healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ctl.Latest() == nil {
			http.Error(w, "model not built yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	grp.Go(func() error { return serveHTTP(gctx, cfg.HealthAddr, health) })
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", met.Handler())
	grp.Go(func() error { return serveHTTP(gctx, cfg.MetricsAddr, metricsMux) })
	writers := func(ctx context.Context) error {
		wg, wctx := errgroup.WithContext(ctx)
		wg.Go(func() error { return statusWriter.Run(wctx) })
		wg.Go(func() error { return dep.Run(wctx) })
		return wg.Wait()
	}
	if cfg.LeaderElection {
		grp.Go(func() error { return runAsLeader(gctx, clients.Kube, cfg, writers) })
	} else {
		grp.Go(func() error { return writers(gctx) })
	}
	log.Info("istiod-lite serving", "grpc", cfg.GRPCAddr, "health", cfg.HealthAddr, "metrics", cfg.MetricsAddr)
	return grp.Wait()
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (set a kubeconfig outside a cluster): %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

func newClients(rc *rest.Config) (kube.Clients, error) {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "istiod-lite"
	rc.QPS, rc.Burst = 50, 100
	k, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return kube.Clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	gw, err := gwclient.NewForConfig(rc)
	if err != nil {
		return kube.Clients{}, fmt.Errorf("gateway client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return kube.Clients{}, fmt.Errorf("dynamic client: %w", err)
	}
	return kube.Clients{Kube: k, Gateway: gw, Dynamic: dyn}, nil
}

// publishRoot writes the trust bundle where proxies read it: ConfigMap
// istio-ca-root-cert (key root-cert.pem), as Istio does.
func publishRoot(ctx context.Context, k kubernetes.Interface, ns, root string) error {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: deployer.RootCertConfigMap, Namespace: ns},
		Data:       map[string]string{"root-cert.pem": root},
	}
	body, err := json.Marshal(cm)
	if err != nil {
		return fmt.Errorf("encode root ConfigMap: %w", err)
	}
	force := true
	if _, err := k.CoreV1().ConfigMaps(ns).Patch(ctx, cm.Name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: kube.FieldManager, Force: &force}); err != nil {
		return fmt.Errorf("publish root certificate: %w", err)
	}
	return nil
}

// servingCerts keeps istiod-lite's own certificate fresh: it is re-issued past half
// of its lifetime.
type servingCerts struct {
	authority *ca.Authority
	id        spiffeid.ID
	dns       []string
	mu        sync.Mutex
	cert      *tls.Certificate
}

func newServingCerts(a *ca.Authority, td spiffeid.TrustDomain, cfg Config) (*servingCerts, error) {
	id, err := spiffeid.FromSegments(td, "ns", cfg.Namespace, "sa", cfg.ServiceName)
	if err != nil {
		return nil, fmt.Errorf("serving identity: %w", err)
	}
	svc := cfg.ServiceName + "." + cfg.Namespace
	sc := &servingCerts{authority: a, id: id, dns: []string{cfg.ServiceName, svc, svc + ".svc", svc + ".svc." + td.Name()}}
	if _, err := sc.get(nil); err != nil {
		return nil, err
	}
	return sc, nil
}

func (sc *servingCerts) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.cert != nil {
		l := sc.cert.Leaf
		if time.Now().Before(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)) {
			return sc.cert, nil
		}
	}
	c, err := sc.authority.ServingCertificate(sc.id, sc.dns, 30*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	sc.cert = c
	return c, nil
}

func serveGRPC(ctx context.Context, g *grpc.Server, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			g.Stop()
		}
	}()
	err = g.Serve(lis)
	<-done
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc: %w", err)
	}
	return nil
}

func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	if addr == "" || addr == "-" {
		return nil
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("http %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http %s: %w", addr, err)
	}
	return nil
}

// proxyAuthorizer admits an xDS stream when the caller's token matches the proxy it
// claims to be: a node proxy bound to a pod on that node, or a waypoint's own
// ServiceAccount (named after its Gateway).
type proxyAuthorizer struct {
	reviewer    *authn.Reviewer
	nodeProxies []string
}

func (a proxyAuthorizer) AuthorizeProxy(ctx context.Context, p xds.Proxy) error {
	c, err := a.reviewer.Authenticate(ctx)
	if err != nil {
		return err
	}
	switch p.Kind {
	case xds.Ztunnel:
		for _, np := range a.nodeProxies {
			if np == c.Namespace+"/"+c.ServiceAccount && c.Node == p.Node {
				return nil
			}
		}
		return fmt.Errorf("caller %s may not subscribe as the ztunnel of node %s", c, p.Node)
	case xds.Waypoint:
		if c.Namespace == p.Waypoint.Namespace && c.ServiceAccount == p.Waypoint.Name {
			return nil
		}
		return fmt.Errorf("caller %s may not subscribe as waypoint %s", c, p.Waypoint)
	}
	return fmt.Errorf("unknown proxy kind %v", p.Kind)
}
