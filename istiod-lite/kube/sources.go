package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
	gwlistersv1beta1 "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1beta1"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// GVRs of the Istio security resources, read through the dynamic client (they have
// no generated clientset).
var (
	AuthorizationPolicies = schema.GroupVersionResource{Group: securityv1.GroupName, Version: "v1", Resource: securityv1.ResourceAuthorizationPolicies}
	PeerAuthentications   = schema.GroupVersionResource{Group: securityv1.GroupName, Version: "v1", Resource: securityv1.ResourcePeerAuthentications}
)

const nodeIndex = "spec.nodeName"

// Clients are the API clients istiod-lite uses.
type Clients struct {
	Kube    kubernetes.Interface
	Gateway gwclient.Interface
	Dynamic dynamic.Interface
}

// Sources holds the informers and their caches.
type Sources struct {
	kube    informers.SharedInformerFactory
	gateway gwinformers.SharedInformerFactory
	dynamic dynamicinformer.DynamicSharedInformerFactory

	namespaces      corelisters.NamespaceLister
	pods            corelisters.PodLister
	podInformer     cache.SharedIndexInformer
	services        corelisters.ServiceLister
	serviceAccounts corelisters.ServiceAccountLister
	gateways        gwlisters.GatewayLister
	httpRoutes      gwlisters.HTTPRouteLister
	grpcRoutes      gwlisters.GRPCRouteLister
	refGrants       gwlistersv1beta1.ReferenceGrantLister
	authz           cache.GenericLister
	peerAuthn       cache.GenericLister
	informers       []cache.SharedIndexInformer
}

// NewSources sets up (without starting) the informers the model needs. onChange is
// called, from informer goroutines, after any add, update or delete.
func NewSources(c Clients, onChange func()) (*Sources, error) {
	s := &Sources{
		kube:    informers.NewSharedInformerFactory(c.Kube, 0),
		gateway: gwinformers.NewSharedInformerFactory(c.Gateway, 0),
		dynamic: dynamicinformer.NewDynamicSharedInformerFactory(c.Dynamic, 0),
	}
	core := s.kube.Core().V1()
	s.namespaces = core.Namespaces().Lister()
	s.pods = core.Pods().Lister()
	s.podInformer = core.Pods().Informer()
	if err := s.podInformer.AddIndexers(cache.Indexers{nodeIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("pod node index: %w", err)
	}
	s.services = core.Services().Lister()
	s.serviceAccounts = core.ServiceAccounts().Lister()
	gw := s.gateway.Gateway().V1()
	s.gateways = gw.Gateways().Lister()
	s.httpRoutes = gw.HTTPRoutes().Lister()
	s.grpcRoutes = gw.GRPCRoutes().Lister()
	refGrants := s.gateway.Gateway().V1beta1().ReferenceGrants()
	s.refGrants = refGrants.Lister()
	s.authz = s.dynamic.ForResource(AuthorizationPolicies).Lister()
	s.peerAuthn = s.dynamic.ForResource(PeerAuthentications).Lister()
	s.informers = []cache.SharedIndexInformer{
		core.Namespaces().Informer(), s.podInformer, core.Services().Informer(), core.ServiceAccounts().Informer(),
		gw.Gateways().Informer(), gw.HTTPRoutes().Informer(), gw.GRPCRoutes().Informer(), refGrants.Informer(),
		s.dynamic.ForResource(AuthorizationPolicies).Informer(), s.dynamic.ForResource(PeerAuthentications).Informer(),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { onChange() },
		UpdateFunc: func(any, any) { onChange() },
		DeleteFunc: func(any) { onChange() },
	}
	for _, inf := range s.informers {
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, fmt.Errorf("add event handler: %w", err)
		}
	}
	return s, nil
}

// Start starts the informers and waits until their caches are filled.
func (s *Sources) Start(ctx context.Context) error {
	s.kube.Start(ctx.Done())
	s.gateway.Start(ctx.Done())
	s.dynamic.Start(ctx.Done())
	syncs := make([]cache.InformerSynced, 0, len(s.informers))
	for _, inf := range s.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(wctx.Done(), syncs...) {
		return errors.New("informer caches did not sync (are the CRDs in manifests/crds installed?)")
	}
	return nil
}

// Shutdown waits for the informer goroutines after the Start context is done.
func (s *Sources) Shutdown() {
	s.kube.Shutdown()
	s.gateway.Shutdown()
	s.dynamic.Shutdown()
}

// Snapshot lists the caches into model inputs. Objects are shared with the caches and
// must not be modified.
func (s *Sources) Snapshot(base model.Inputs) (*model.Inputs, error) {
	in := base
	var err error
	all := labels.Everything()
	if in.Namespaces, err = s.namespaces.List(all); err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	if in.Pods, err = s.pods.List(all); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if in.Services, err = s.services.List(all); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	if in.ServiceAccounts, err = s.serviceAccounts.List(all); err != nil {
		return nil, fmt.Errorf("list service accounts: %w", err)
	}
	if in.Gateways, err = s.gateways.List(all); err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	if in.HTTPRoutes, err = s.httpRoutes.List(all); err != nil {
		return nil, fmt.Errorf("list HTTPRoutes: %w", err)
	}
	if in.GRPCRoutes, err = s.grpcRoutes.List(all); err != nil {
		return nil, fmt.Errorf("list GRPCRoutes: %w", err)
	}
	if in.ReferenceGrants, err = s.refGrants.List(all); err != nil {
		return nil, fmt.Errorf("list ReferenceGrants: %w", err)
	}
	if in.AuthorizationPolicies, err = convertAll[securityv1.AuthorizationPolicy](s.authz); err != nil {
		return nil, err
	}
	if in.PeerAuthentications, err = convertAll[securityv1.PeerAuthentication](s.peerAuthn); err != nil {
		return nil, err
	}
	return &in, nil
}

// convertAll converts the unstructured objects of a dynamic lister to typed ones; an
// object that does not convert (schema drift) is skipped, never fatal.
func convertAll[T any](l cache.GenericLister) ([]*T, error) {
	objs, err := l.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	out := make([]*T, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		t := new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, t); err != nil {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// PodsOnNode lists the cached pods scheduled on a node (for the CA).
func (s *Sources) PodsOnNode(node string) []*corev1.Pod {
	objs, err := s.podInformer.GetIndexer().ByIndex(nodeIndex, node)
	if err != nil {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			out = append(out, p)
		}
	}
	return out
}

// Pod finds a cached pod (for authentication).
func (s *Sources) Pod(namespace, name string) (*corev1.Pod, error) {
	p, err := s.pods.Pods(namespace).Get(name)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, err)
	}
	return p, nil
}

// Gateways is the Gateway cache (for the waypoint deployer).
func (s *Sources) Gateways() gwlisters.GatewayLister { return s.gateways }

// ServiceAccounts is the ServiceAccount cache (for the waypoint deployer).
func (s *Sources) ServiceAccounts() corelisters.ServiceAccountLister { return s.serviceAccounts }

// Services is the Service cache (for the waypoint deployer).
func (s *Sources) Services() corelisters.ServiceLister { return s.services }

// object returns a cached security object, for status comparison.
func (s *Sources) object(gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	l := s.authz
	if gvr == PeerAuthentications {
		l = s.peerAuthn
	}
	o, err := l.ByNamespace(ns).Get(name)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", gvr.Resource, ns, name, err)
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("%s %s/%s: unexpected %T", gvr.Resource, ns, name, o)
	}
	return u, nil
}
