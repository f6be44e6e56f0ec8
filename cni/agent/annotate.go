package agent

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// annotate sets (enabled) or removes the redirection annotation through pods/status,
// unless the pod already says so. A pod that is gone needs nothing.
func (a *Agent) annotate(ctx context.Context, pod *corev1.Pod, enabled bool) error {
	has := pod.Annotations[RedirectionAnnotation] == RedirectionEnabled
	if has == enabled && (enabled || pod.Annotations[RedirectionAnnotation] == "") {
		return nil
	}
	var value any // JSON null removes the key in a merge patch
	if enabled {
		value = RedirectionEnabled
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{RedirectionAnnotation: value}}})
	if err != nil {
		return err
	}
	_, err = a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
