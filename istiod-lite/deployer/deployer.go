// Package deployer runs waypoints: for every Gateway of class istio-waypoint it
// creates the waypoint's ServiceAccount, Deployment and Service (owned by the Gateway,
// so deleting the Gateway removes them), and reports Accepted and Programmed with the
// waypoint's address in the Gateway's status. It also creates the istio-waypoint
// GatewayClass. Run it on the leader only.
package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/ambit-mesh/ambit/api/mesh"
)

// Labels on everything the deployer creates.
const (
	// LabelManaged marks waypoint objects (Istio's label and value).
	LabelManaged = "gateway.istio.io/managed"
	// ManagedValue is the value of LabelManaged.
	ManagedValue = "istio.io-mesh-controller"
	// AnnotationConfigHash holds a hash of what the deployer applied, so that it
	// re-applies only on change.
	AnnotationConfigHash = "ambit.io/config-hash"
	// RootCertConfigMap is the ConfigMap, in every namespace running mesh proxies,
	// that holds the trust bundle (key root-cert.pem), as Istio's.
	RootCertConfigMap = "istio-ca-root-cert"
	fieldManager      = "istiod-lite"
)

// Config configures the deployer.
type Config struct {
	Kube    kubernetes.Interface
	Gateway gwclient.Interface
	// Gateways, Services and ServiceAccounts are shared informer caches.
	Gateways        gwlisters.GatewayLister
	Services        corelisters.ServiceLister
	ServiceAccounts corelisters.ServiceAccountLister
	// Pod is the template of waypoint pods.
	Pod PodConfig
	// RootCertPEM is published in the RootCertConfigMap of waypoint namespaces.
	RootCertPEM string
	Log         *slog.Logger
}

// Deployer reconciles waypoint Gateways.
type Deployer struct {
	cfg  Config
	poke chan struct{}
	now  func() time.Time
	// deployments is the cache of waypoint Deployments, set up by each Run (a
	// replica may lead, lose the lease and lead again).
	deployments appslisters.DeploymentLister
}

// New returns a deployer; it starts nothing.
func New(cfg Config) *Deployer {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Deployer{cfg: cfg, poke: make(chan struct{}, 1), now: time.Now}
}

// Notify asks for a reconcile (after a model change).
func (d *Deployer) Notify() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// Run reconciles every waypoint Gateway after each notification or change of a
// waypoint Deployment, until ctx ends.
func (d *Deployer) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(d.cfg.Kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManaged + "=" + ManagedValue
	}))
	d.deployments = f.Apps().V1().Deployments().Lister()
	inf := f.Apps().V1().Deployments().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { d.Notify() }, UpdateFunc: func(any, any) { d.Notify() }, DeleteFunc: func(any) { d.Notify() },
	}); err != nil {
		return fmt.Errorf("deployment informer: %w", err)
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil
	}
	if err := d.ensureGatewayClass(ctx); err != nil {
		d.cfg.Log.Warn("deployer: gateway class", "err", err)
	}
	d.Notify()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.poke:
		}
		gws, err := d.cfg.Gateways.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list gateways: %w", err)
		}
		for _, gw := range gws {
			if gw.Spec.GatewayClassName != mesh.WaypointGatewayClass || gw.DeletionTimestamp != nil {
				continue
			}
			if err := d.reconcile(ctx, gw); err != nil && ctx.Err() == nil {
				d.cfg.Log.Warn("deployer: reconcile failed", "namespace", gw.Namespace, "gateway", gw.Name, "err", err)
			}
		}
	}
}

func (d *Deployer) reconcile(ctx context.Context, gw *gwv1.Gateway) error {
	objs := d.desired(gw)
	for _, o := range objs {
		if err := d.applyIfChanged(ctx, o); err != nil {
			return err
		}
	}
	return d.updateStatus(ctx, gw)
}

// object is one object to apply.
type object struct {
	kind, namespace, name string
	obj                   metav1.Object
	current               func(ctx context.Context) (metav1.Object, error)
	apply                 func(ctx context.Context, body []byte) error
}

func (d *Deployer) applyIfChanged(ctx context.Context, o object) error {
	body, err := json.Marshal(o.obj)
	if err != nil {
		return fmt.Errorf("encode %s: %w", o.kind, err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:8])
	if cur, err := o.current(ctx); err == nil && cur.GetAnnotations()[AnnotationConfigHash] == hash {
		return nil
	}
	ann := o.obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationConfigHash] = hash
	o.obj.SetAnnotations(ann)
	if body, err = json.Marshal(o.obj); err != nil {
		return fmt.Errorf("encode %s: %w", o.kind, err)
	}
	if err := o.apply(ctx, body); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", o.kind, o.namespace, o.name, err)
	}
	d.cfg.Log.Info("deployer: applied", "kind", o.kind, "namespace", o.namespace, "name", o.name)
	return nil
}

func applyOpts() metav1.PatchOptions {
	force := true
	return metav1.PatchOptions{FieldManager: fieldManager, Force: &force}
}

func (d *Deployer) desired(gw *gwv1.Gateway) []object {
	k := d.cfg.Kube
	sa, dep, svc := waypointObjects(gw, d.cfg.Pod)
	ns, name := gw.Namespace, gw.Name
	objs := []object{
		{kind: "ServiceAccount", namespace: ns, name: name, obj: sa,
			current: func(context.Context) (metav1.Object, error) {
				return d.cfg.ServiceAccounts.ServiceAccounts(ns).Get(name)
			},
			apply: func(ctx context.Context, b []byte) error {
				_, err := k.CoreV1().ServiceAccounts(ns).Patch(ctx, name, types.ApplyPatchType, b, applyOpts())
				return err
			}},
		{kind: "Deployment", namespace: ns, name: name, obj: dep,
			current: func(context.Context) (metav1.Object, error) { return d.deployments.Deployments(ns).Get(name) },
			apply: func(ctx context.Context, b []byte) error {
				_, err := k.AppsV1().Deployments(ns).Patch(ctx, name, types.ApplyPatchType, b, applyOpts())
				return err
			}},
		{kind: "Service", namespace: ns, name: name, obj: svc,
			current: func(context.Context) (metav1.Object, error) { return d.cfg.Services.Services(ns).Get(name) },
			apply: func(ctx context.Context, b []byte) error {
				_, err := k.CoreV1().Services(ns).Patch(ctx, name, types.ApplyPatchType, b, applyOpts())
				return err
			}},
	}
	if d.cfg.RootCertPEM != "" {
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: ns},
			Data:       map[string]string{"root-cert.pem": d.cfg.RootCertPEM},
		}
		objs = append([]object{{kind: "ConfigMap", namespace: ns, name: RootCertConfigMap, obj: cm,
			// Not cached (istiod-lite watches no ConfigMaps): read it.
			current: func(ctx context.Context) (metav1.Object, error) {
				return k.CoreV1().ConfigMaps(ns).Get(ctx, RootCertConfigMap, metav1.GetOptions{})
			},
			apply: func(ctx context.Context, b []byte) error {
				_, err := k.CoreV1().ConfigMaps(ns).Patch(ctx, RootCertConfigMap, types.ApplyPatchType, b, applyOpts())
				return err
			}}}, objs...)
	}
	return objs
}

// ensureGatewayClass creates the istio-waypoint GatewayClass and marks it Accepted.
func (d *Deployer) ensureGatewayClass(ctx context.Context) error {
	gc := &gwv1.GatewayClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "GatewayClass"},
		ObjectMeta: metav1.ObjectMeta{Name: mesh.WaypointGatewayClass},
		Spec: gwv1.GatewayClassSpec{
			ControllerName: mesh.WaypointControllerName,
			Description:    ptr("Ambit waypoint proxies (Istio-compatible istio-waypoint class)"),
		},
	}
	body, err := json.Marshal(gc)
	if err != nil {
		return fmt.Errorf("encode gateway class: %w", err)
	}
	cls := d.cfg.Gateway.GatewayV1().GatewayClasses()
	cur, err := cls.Patch(ctx, gc.Name, types.ApplyPatchType, body, applyOpts())
	if err != nil {
		return fmt.Errorf("apply gateway class: %w", err)
	}
	conds := cur.Status.Conditions
	if setCondition(&conds, metav1.Condition{Type: string(gwv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
		Reason: string(gwv1.GatewayClassReasonAccepted), Message: "handled by istiod-lite", ObservedGeneration: cur.Generation}, d.now()) {
		patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
		if err != nil {
			return fmt.Errorf("encode gateway class status: %w", err)
		}
		if _, err := cls.Patch(ctx, gc.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager}, "status"); err != nil {
			return fmt.Errorf("gateway class status: %w", err)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
