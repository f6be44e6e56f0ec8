package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	zdsapi "github.com/ambit-mesh/ambit/api/zds"
	"github.com/ambit-mesh/ambit/cni/enroll"
	"github.com/ambit-mesh/ambit/cni/install"
	"github.com/ambit-mesh/ambit/cni/netns"
	"github.com/ambit-mesh/ambit/cni/rules"
	"github.com/ambit-mesh/ambit/cni/zds"
)

// member is an enrolled pod.
type member struct {
	key   string // namespace/name
	netns *os.File
	ips   []netip.Addr
}

// Agent is the node agent. Build it with New and start it with Run.
type Agent struct {
	cfg       Config
	client    kubernetes.Interface
	log       *slog.Logger
	podRules  rules.Ruleset
	finder    netns.Finder
	zds       *zds.Server
	plugin    *enroll.Server
	installer install.Installer

	pods  corelisters.PodLister
	nss   corelisters.NamespaceLister
	queue workqueue.TypedRateLimitingInterface[string]

	mu        sync.Mutex // serializes enrollment changes
	enrolled  map[types.UID]*member
	hostNetns *os.File
}

// New builds an agent; it does no I/O.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	a := &Agent{
		cfg: cfg, client: client, log: log.With("node", cfg.NodeName),
		podRules: rules.PodRuleset(cfg.Rules),
		finder:   netns.Finder{Proc: cfg.Proc},
		zds:      zds.NewServer(cfg.ZtunnelSocket(), cfg.AckTimeout, cfg.Proc, log),
		enrolled: map[types.UID]*member{},
		installer: install.Installer{
			Binary: cfg.PluginBinary, BinDir: cfg.CNIBinDir, ConfDir: cfg.CNIConfDir,
			Entry:    map[string]any{"agentSocket": cfg.PluginSocket()},
			Interval: 10 * time.Second, Log: log,
		},
	}
	a.plugin = enroll.NewServer(cfg.PluginSocket(), a.handlePlugin, log)
	return a, nil
}

// Run starts the informers, reconciles every pod on the node once (so that the first
// ztunnel snapshot is complete), then serves the plugin and ztunnel, installs the
// plugin and reconciles on events until ctx ends. At shutdown it uninstalls only when
// its DaemonSet is gone.
func (a *Agent) Run(ctx context.Context) error {
	host, err := netns.Open(filepath.Join(a.cfg.Proc, "self/ns/net"))
	if err != nil {
		return fmt.Errorf("own network namespace: %w", err)
	}
	defer host.Close()
	a.hostNetns = host

	podFactory := informers.NewSharedInformerFactoryWithOptions(a.client, a.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + a.cfg.NodeName }))
	nsFactory := informers.NewSharedInformerFactory(a.client, a.cfg.Resync)
	podInf, nsInf := podFactory.Core().V1().Pods(), nsFactory.Core().V1().Namespaces()
	a.pods, a.nss = podInf.Lister(), nsInf.Lister()
	a.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ambit-cni-node"})
	defer a.queue.ShutDown()
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueue,
		UpdateFunc: func(_, obj any) { a.enqueue(obj) },
		DeleteFunc: a.enqueue,
	}); err != nil {
		return err
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueueNamespace,
		UpdateFunc: func(_, obj any) { a.enqueueNamespace(obj) },
	}); err != nil {
		return err
	}
	podFactory.Start(ctx.Done())
	nsFactory.Start(ctx.Done())
	defer podFactory.Shutdown()
	defer nsFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInf.Informer().HasSynced, nsInf.Informer().HasSynced) {
		return fmt.Errorf("informers did not sync: %w", ctx.Err())
	}
	if err := a.startup(ctx); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.zds.Run(gctx) })
	g.Go(func() error { return a.plugin.Run(gctx) })
	g.Go(func() error { return a.installer.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		a.queue.ShutDown()
		return nil
	})
	g.Go(func() error {
		for a.processNext(gctx) {
		}
		return nil
	})
	err = g.Wait()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	return errors.Join(err, a.shutdown(sctx))
}

// startup reconciles every pod on the node before anything is served: pods that
// should be enrolled get their rules (re-applied, idempotent) and are registered for
// ztunnel; stale rules and annotations left by a previous run are removed.
func (a *Agent) startup(ctx context.Context) error {
	pods, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, p := range pods {
		key := p.Namespace + "/" + p.Name
		if err := a.reconcile(ctx, key, true); err != nil {
			a.log.Warn("startup reconcile", "namespace", p.Namespace, "pod", p.Name, "err", err)
			a.queue.AddRateLimited(key)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Info("startup reconcile done", "pods", len(pods), "enrolled", len(a.enrolled))
	return a.applyHost()
}

func (a *Agent) shutdown(ctx context.Context) error {
	ds, err := a.client.AppsV1().DaemonSets(a.cfg.Namespace).Get(ctx, a.cfg.DaemonSet, metav1.GetOptions{})
	switch {
	case err == nil && ds.DeletionTimestamp == nil:
		a.log.Info("stopping; DaemonSet still present, leaving the plugin and enrolled pods in place")
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("check own DaemonSet: %w (leaving everything in place)", err)
	}
	a.log.Info("DaemonSet gone: uninstalling")
	errs := []error{a.installer.Uninstall()}
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, m := range a.enrolled {
		ns, name, _ := cache.SplitMetaNamespaceKey(m.key)
		// The cache may be stopped: say the annotation is there so release removes it.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid,
			Annotations: map[string]string{RedirectionAnnotation: RedirectionEnabled}}}
		errs = append(errs, a.release(ctx, pod, m))
	}
	errs = append(errs, rules.Remove(int(a.hostNetns.Fd()), nftables.TableFamilyIPv4, nil))
	return errors.Join(errs...)
}

func (a *Agent) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		a.queue.Add(key)
	}
}

func (a *Agent) enqueueNamespace(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	pods, err := a.pods.Pods(ns.Name).List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		a.queue.Add(p.Namespace + "/" + p.Name)
	}
}

func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.reconcile(ctx, key, false); err != nil {
		a.log.Warn("reconcile", "pod", key, "err", err)
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

// reconcile makes one pod's enrollment match what its labels ask for. sweep also
// looks for stale rules in pods that are not wanted (after a restart).
func (a *Agent) reconcile(ctx context.Context, key string, sweep bool) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.pods.Pods(ns).Get(name)
	a.mu.Lock()
	defer a.mu.Unlock()
	if apierrors.IsNotFound(err) {
		for uid, m := range a.enrolled {
			if m.key == key {
				a.forget(uid)
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != a.cfg.NodeName {
		return nil
	}
	nsObj, _ := a.nss.Get(ns)
	want, why := Wants(pod, nsObj)
	m, have := a.enrolled[pod.UID]
	log := a.log.With("namespace", ns, "pod", name)
	switch {
	case want && !have && pod.Status.Phase == corev1.PodRunning:
		f, err := a.finder.Find(string(pod.UID))
		if errors.Is(err, netns.ErrNotFound) && pod.Annotations[RedirectionAnnotation] == RedirectionEnabled {
			// Enrolled by an earlier run but not findable now: ztunnel keeps what it has.
			a.zds.Keep(string(pod.UID), workloadInfo(pod))
		}
		if err != nil {
			return err
		}
		if err := a.enroll(ctx, pod, f, podIPs(pod)); err != nil {
			return err
		}
		log.Info("enrolled running pod")
	case !want && have:
		if err := a.release(ctx, pod, m); err != nil {
			return err
		}
		log.Info("released pod", "reason", why)
	case !want && (sweep || pod.Annotations[RedirectionAnnotation] != ""):
		if err := a.removeStale(pod); err != nil {
			return err
		}
	}
	_, have = a.enrolled[pod.UID]
	if err := a.annotate(ctx, pod, have); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// removeStale removes rules a previous run left in a pod that is not wanted.
func (a *Agent) removeStale(pod *corev1.Pod) error {
	if pod.Spec.HostNetwork {
		return nil
	}
	f, err := a.finder.Find(string(pod.UID))
	if errors.Is(err, netns.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	ok, err := rules.Installed(int(f.Fd()), a.podRules)
	if err != nil || !ok {
		return err
	}
	a.log.Info("removing stale redirection", "namespace", pod.Namespace, "pod", pod.Name)
	return rules.Remove(int(f.Fd()), a.podRules.Family, a.podRules.Route)
}

// enroll applies the pod's redirection, registers it with ztunnel and marks it. It is
// all or nothing: when a step fails (the pod deleted meanwhile included), what the
// earlier steps did is undone, so neither rules nor a ztunnel registration are left
// behind. It takes ownership of f. Callers hold a.mu.
func (a *Agent) enroll(ctx context.Context, pod *corev1.Pod, f *os.File, ips []netip.Addr) error {
	wrap := func(err error) error { return fmt.Errorf("enroll pod %s/%s: %w", pod.Namespace, pod.Name, err) }
	zf, err := dup(f)
	if err != nil {
		f.Close()
		return wrap(err)
	}
	if err := rules.Apply(int(f.Fd()), a.podRules); err != nil {
		// Apply may stop between the table and the policy routing.
		rerr := rules.Remove(int(f.Fd()), a.podRules.Family, a.podRules.Route)
		zf.Close()
		f.Close()
		return errors.Join(wrap(err), rerr)
	}
	if err := migrateListeners(f); err != nil {
		// Not a matter of security: without it a ztunnel restart may reset the few
		// connections being accepted at the moment the old ztunnel closes.
		a.log.Warn("ztunnel restarts may reset connections being accepted", "namespace", pod.Namespace, "pod", pod.Name, "err", err)
	}
	if old, ok := a.enrolled[pod.UID]; ok && old.netns != f {
		old.netns.Close()
	}
	a.enrolled[pod.UID] = &member{key: pod.Namespace + "/" + pod.Name, netns: f, ips: ips}
	if err := a.applyHost(); err != nil {
		zf.Close()
		return errors.Join(wrap(err), a.undo(pod.UID))
	}
	if err := a.zds.Add(zds.Workload{UID: string(pod.UID), Info: workloadInfo(pod), Netns: zf}); err != nil {
		return errors.Join(wrap(err), a.undo(pod.UID))
	}
	if err := a.annotate(ctx, pod, true); err != nil {
		if apierrors.IsNotFound(err) {
			err = fmt.Errorf("%w: %w", ErrPodGone, err)
		}
		return errors.Join(wrap(err), a.zds.Del(string(pod.UID)), a.undo(pod.UID))
	}
	return nil
}

// undo reverts a half-done enrollment. Callers hold a.mu.
func (a *Agent) undo(uid types.UID) error {
	m := a.enrolled[uid]
	delete(a.enrolled, uid)
	defer m.netns.Close()
	return errors.Join(rules.Remove(int(m.netns.Fd()), a.podRules.Family, a.podRules.Route), a.applyHost())
}

// release unmarks the pod first (so the control plane stops sending it mesh traffic),
// then tells ztunnel, then removes the rules. Callers hold a.mu.
func (a *Agent) release(ctx context.Context, pod *corev1.Pod, m *member) error {
	if err := a.annotate(ctx, pod, false); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	zerr := a.zds.Del(string(pod.UID))
	rerr := rules.Remove(int(m.netns.Fd()), a.podRules.Family, a.podRules.Route)
	m.netns.Close()
	delete(a.enrolled, pod.UID)
	return errors.Join(zerr, rerr, a.applyHost())
}

// forget drops a pod whose sandbox is gone (its rules went with its netns). Callers
// hold a.mu.
func (a *Agent) forget(uid types.UID) {
	m, ok := a.enrolled[uid]
	if !ok {
		return
	}
	if err := a.zds.Del(string(uid)); err != nil {
		a.log.Warn("tell ztunnel about a deleted pod", "pod", m.key, "err", err)
	}
	m.netns.Close()
	delete(a.enrolled, uid)
	if err := a.applyHost(); err != nil {
		a.log.Warn("update node rules", "err", err)
	}
}

// applyHost rewrites the node's probe rules for the enrolled pods. Callers hold a.mu.
func (a *Agent) applyHost() error {
	var ips []netip.Addr
	for _, m := range a.enrolled {
		ips = append(ips, m.ips...)
	}
	r, ok := rules.HostRuleset(a.cfg.Rules, ips)
	if !ok || a.hostNetns == nil {
		return nil
	}
	if err := rules.Apply(int(a.hostNetns.Fd()), r); err != nil {
		return fmt.Errorf("node probe rules: %w", err)
	}
	return nil
}

func workloadInfo(pod *corev1.Pod) *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Name: pod.Name, Namespace: pod.Namespace, ServiceAccount: pod.Spec.ServiceAccountName}
}

func podIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func dup(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup netns: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
