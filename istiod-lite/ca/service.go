package ca

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	caapi "github.com/ambit-mesh/ambit/api/ca"
	"github.com/ambit-mesh/ambit/istiod-lite/authn"
)

// Authenticator names the caller of a gRPC call.
type Authenticator interface {
	Authenticate(ctx context.Context) (*authn.Caller, error)
}

// NodePods lists the pods scheduled on a node; istiod-lite backs it with its informer.
type NodePods interface {
	PodsOnNode(node string) []*corev1.Pod
}

// ServiceConfig configures the gRPC certificate service.
type ServiceConfig struct {
	Authority *Authority
	Authn     Authenticator
	Pods      NodePods
	// NodeProxies are the ServiceAccounts ("namespace/name") of node proxies
	// (ztunnels), which may ask for the identities of pods on their own node.
	NodeProxies []string
	// DefaultTTL of certificates (24 h if zero); MaxTTL caps what callers ask (DefaultTTL if zero).
	DefaultTTL, MaxTTL time.Duration
	Log                *slog.Logger
}

// Service implements ambit.ca.v1.CertificateService.
type Service struct {
	caapi.UnimplementedCertificateServiceServer
	cfg ServiceConfig
}

// NewService returns the certificate service.
func NewService(cfg ServiceConfig) *Service {
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = 24 * time.Hour
	}
	if cfg.MaxTTL < cfg.DefaultTTL {
		cfg.MaxTTL = cfg.DefaultTTL
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g grpc.ServiceRegistrar) { caapi.RegisterCertificateServiceServer(g, s) }

// CreateCertificate signs a CSR for the caller's own identity or, for a node proxy,
// the identity of a pod on the caller's node. Every refusal is logged with who asked
// for what.
func (s *Service) CreateCertificate(ctx context.Context, req *caapi.CreateCertificateRequest) (*caapi.CreateCertificateResponse, error) {
	caller, err := s.cfg.Authn.Authenticate(ctx)
	if err != nil {
		s.cfg.Log.Warn("ca: refused: unauthenticated caller", "err", err)
		if errors.Is(err, authn.ErrUnauthenticated) {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	td := s.cfg.Authority.TrustDomain()
	own, err := spiffeid.FromSegments(td, "ns", caller.Namespace, "sa", caller.ServiceAccount)
	if err != nil {
		return nil, s.refuse(codes.InvalidArgument, caller, "", "caller identity: "+err.Error())
	}
	want := own
	if req.GetImpersonatedIdentity() != "" {
		if want, err = spiffeid.FromString(req.GetImpersonatedIdentity()); err != nil {
			return nil, s.refuse(codes.InvalidArgument, caller, req.GetImpersonatedIdentity(), "impersonated identity: "+err.Error())
		}
	}
	if want != own {
		if reason := s.mayImpersonate(caller, want); reason != "" {
			return nil, s.refuse(codes.PermissionDenied, caller, want.String(), reason)
		}
	}
	ttl := time.Duration(req.GetValidityDurationSeconds()) * time.Second
	if ttl <= 0 {
		ttl = s.cfg.DefaultTTL
	}
	ttl = min(ttl, s.cfg.MaxTTL)
	chain, err := s.cfg.Authority.Sign([]byte(req.GetCsr()), want, ttl)
	if err != nil {
		return nil, s.refuse(codes.InvalidArgument, caller, want.String(), err.Error())
	}
	s.cfg.Log.Info("ca: signed", "caller", caller.String(), "identity", want.String(), "ttl", ttl)
	return &caapi.CreateCertificateResponse{CertChain: chain, TrustBundle: s.cfg.Authority.RootsPEM()}, nil
}

// mayImpersonate returns why caller may not have want, or "" if it may: caller must be
// a node proxy whose token names its node, and a pod running as want must be
// scheduled on that node.
func (s *Service) mayImpersonate(caller *authn.Caller, want spiffeid.ID) string {
	if !slices.Contains(s.cfg.NodeProxies, caller.Namespace+"/"+caller.ServiceAccount) {
		return "only node proxies may ask for another identity"
	}
	if caller.Node == "" {
		return "the caller's token is not bound to a pod on a node"
	}
	if !want.MemberOf(s.cfg.Authority.TrustDomain()) {
		return "identity is outside trust domain " + s.cfg.Authority.TrustDomain().Name()
	}
	for _, pod := range s.cfg.Pods.PodsOnNode(caller.Node) {
		if pod.Spec.NodeName != caller.Node || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		id, err := spiffeid.FromSegments(s.cfg.Authority.TrustDomain(), "ns", pod.Namespace, "sa", sa)
		if err == nil && id == want {
			return ""
		}
	}
	return "no pod with that identity runs on node " + caller.Node
}

func (s *Service) refuse(code codes.Code, caller *authn.Caller, identity, reason string) error {
	s.cfg.Log.Warn("ca: refused", "caller", caller.String(), "node", caller.Node, "identity", identity, "reason", reason)
	return status.Error(code, reason)
}
