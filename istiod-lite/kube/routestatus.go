package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/ambit-mesh/ambit/api/mesh"
	"github.com/ambit-mesh/ambit/istiod-lite/model"
)

// DesiredRouteParents merges Ambit's parent statuses into a route's current ones:
// entries of other controllers are kept as they are, Ambit's are replaced (keeping
// the transition times of conditions that did not change).
func DesiredRouteParents(cur []gwv1.RouteParentStatus, want model.RouteStatus, now time.Time) []gwv1.RouteParentStatus {
	var out []gwv1.RouteParentStatus
	old := map[string][]metav1.Condition{}
	for _, p := range cur {
		if p.ControllerName != mesh.WaypointControllerName {
			out = append(out, p)
			continue
		}
		old[parentKey(p.ParentRef)] = p.Conditions
	}
	for _, p := range want.Parents {
		conds := append([]metav1.Condition(nil), old[parentKey(p.ParentRef)]...)
		keep := map[string]bool{}
		for _, c := range p.Conditions {
			keep[c.Type] = true
			c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
			meta.SetStatusCondition(&conds, c)
		}
		for _, c := range old[parentKey(p.ParentRef)] {
			if !keep[c.Type] {
				meta.RemoveStatusCondition(&conds, c.Type)
			}
		}
		p.Conditions = conds
		out = append(out, p)
	}
	return out
}

func parentKey(p gwv1.ParentReference) string {
	b, err := json.Marshal(p)
	if err != nil {
		return string(p.Name)
	}
	return string(b)
}

func (w *StatusWriter) writeRoute(ctx context.Context, gw gwclient.Interface, key model.StatusKey, want model.RouteStatus) error {
	var cur []gwv1.RouteParentStatus
	switch key.Kind {
	case model.KindHTTPRoute:
		r, err := w.sources.httpRoutes.HTTPRoutes(key.Ref.Namespace).Get(key.Ref.Name)
		if err != nil {
			return fmt.Errorf("HTTPRoute %s: %w", key.Ref, err)
		}
		cur = r.Status.Parents
	case model.KindGRPCRoute:
		r, err := w.sources.grpcRoutes.GRPCRoutes(key.Ref.Namespace).Get(key.Ref.Name)
		if err != nil {
			return fmt.Errorf("GRPCRoute %s: %w", key.Ref, err)
		}
		cur = r.Status.Parents
	}
	next := DesiredRouteParents(cur, want, w.now())
	if equality.Semantic.DeepEqual(cur, next) {
		return nil
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"parents": next}})
	if err != nil {
		return fmt.Errorf("encode route status: %w", err)
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager}
	if key.Kind == model.KindHTTPRoute {
		_, err = gw.GatewayV1().HTTPRoutes(key.Ref.Namespace).Patch(ctx, key.Ref.Name, types.MergePatchType, body, opts, "status")
	} else {
		_, err = gw.GatewayV1().GRPCRoutes(key.Ref.Namespace).Patch(ctx, key.Ref.Name, types.MergePatchType, body, opts, "status")
	}
	if err != nil {
		return fmt.Errorf("patch %s %s status: %w", key.Kind, key.Ref, err)
	}
	return nil
}
