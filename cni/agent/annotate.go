package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ErrPodGone says enrollment failed because the pod was deleted meanwhile: it could
// not be marked, so its enrollment was rolled back.
var ErrPodGone = errors.New("pod was deleted during enrollment, could not mark it")

// annotate sets (enabled) or removes the redirection annotation through pods/status,
// unless the pod already says so. A pod that is gone is an error apierrors.IsNotFound
// recognizes: removing the mark from it needs nothing, enrolling it must be undone.
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
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
