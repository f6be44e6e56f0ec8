package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// StatusWriter writes the model's conditions on AuthorizationPolicies,
// PeerAuthentications, HTTPRoutes and GRPCRoutes. Run it on the leader only.
type StatusWriter struct {
	dyn     dynamic.Interface
	gw      gwclient.Interface
	sources *Sources
	log     *slog.Logger
	now     func() time.Time
	poke    chan struct{}
	latest  atomic.Pointer[model.Model]
}

// NewStatusWriter returns a writer reading current status from the caches.
func NewStatusWriter(c Clients, sources *Sources, log *slog.Logger) *StatusWriter {
	return &StatusWriter{dyn: c.Dynamic, gw: c.Gateway, sources: sources, log: log, now: time.Now, poke: make(chan struct{}, 1)}
}

// Notify hands the writer a new model (a Controller consumer).
func (w *StatusWriter) Notify(m *model.Model) {
	w.latest.Store(m)
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Run writes status after each model until ctx ends.
func (w *StatusWriter) Run(ctx context.Context) error {
	if w.latest.Load() != nil {
		w.Notify(w.latest.Load())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.poke:
		}
		m := w.latest.Load()
		for key, st := range m.Status {
			if err := w.write(ctx, key, st); err != nil && ctx.Err() == nil {
				w.log.Warn("status: write failed", "kind", key.Kind, "namespace", key.Ref.Namespace, "name", key.Ref.Name, "err", err)
			}
		}
		for key, st := range m.Routes {
			if err := w.writeRoute(ctx, w.gw, key, st); err != nil && ctx.Err() == nil {
				w.log.Warn("status: write failed", "kind", key.Kind, "namespace", key.Ref.Namespace, "name", key.Ref.Name, "err", err)
			}
		}
	}
}

func (w *StatusWriter) write(ctx context.Context, key model.StatusKey, want model.ObjectStatus) error {
	gvr := AuthorizationPolicies
	if key.Kind == model.KindPeerAuthentication {
		gvr = PeerAuthentications
	}
	obj, err := w.sources.object(gvr, key.Ref.Namespace, key.Ref.Name)
	if err != nil {
		return err // deleted meanwhile: the next model drops it
	}
	var cur securityv1.Status
	if raw, ok := obj.Object["status"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &cur); err != nil {
			cur = securityv1.Status{}
		}
	}
	next := DesiredStatus(cur, want, w.now())
	if equality.Semantic.DeepEqual(cur, next) {
		return nil
	}
	return patchStatus(ctx, w.dyn, gvr, key.Ref, next)
}

// DesiredStatus merges the model's conditions into the current status: transition
// times are kept for conditions whose status did not change, and condition types the
// model no longer sets are removed.
func DesiredStatus(cur securityv1.Status, want model.ObjectStatus, now time.Time) securityv1.Status {
	next := securityv1.Status{ObservedGeneration: want.Generation, Conditions: slices.Clone(cur.Conditions)}
	keep := map[string]bool{}
	for _, c := range want.Conditions {
		keep[c.Type] = true
		c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
		meta.SetStatusCondition(&next.Conditions, c)
	}
	for _, c := range cur.Conditions {
		if !keep[c.Type] {
			meta.RemoveStatusCondition(&next.Conditions, c.Type)
		}
	}
	if len(next.Conditions) == 0 {
		next.Conditions = nil
	}
	return next
}

func patchStatus(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, ref model.Ref, st securityv1.Status) error {
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if _, err := dyn.Resource(gvr).Namespace(ref.Namespace).Patch(ctx, ref.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager}, "status"); err != nil {
		return fmt.Errorf("patch %s %s status: %w", gvr.Resource, ref, err)
	}
	return nil
}

// FieldManager is istiod-lite's name in managedFields.
const FieldManager = "istiod-lite"
