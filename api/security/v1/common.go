package v1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// WorkloadSelector selects the pods, in the policy's namespace, a policy applies to.
// In the root namespace (istio-system) it selects pods in every namespace.
type WorkloadSelector struct {
	// MatchLabels selects pods carrying all of these labels. Empty selects every pod.
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PolicyTargetReference names the resource a policy is attached to: a Gateway (a
// waypoint), a Service, or a ServiceEntry/GatewayClass as in Istio.
type PolicyTargetReference struct {
	// Group of the target; empty means the core API group.
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the target, for example Gateway or Service.
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// Name of the target.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace of the target; must be the policy's own namespace if set.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Status is the status Ambit writes on every resource it reads.
type Status struct {
	// Conditions say whether the resource was accepted and, if not, why.
	// Ambit sets Accepted, and for policies enforced partially a Warning condition.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the metadata.generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Condition types Ambit writes in Status.
const (
	// ConditionAccepted is True when the resource is valid and in use.
	ConditionAccepted = "Accepted"
	// ConditionWarning is True when the resource is in use but not exactly as written
	// (for example L7 rules enforced fail-closed at ztunnel).
	ConditionWarning = "Warning"
)
