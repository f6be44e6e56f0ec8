package v1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// PeerAuthentication says whether workloads accept plaintext (PERMISSIVE), only mutual
// TLS (STRICT), or only plaintext (DISABLE), for the whole workload or per port.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=istio-io;security-istio-io,shortName=pa
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mtls.mode`,description="Defines the mTLS mode used for peer authentication."
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type PeerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy as the user wrote it.
	Spec PeerAuthenticationSpec `json:"spec,omitempty"`
	// Status is written by istiod-lite.
	// +optional
	Status Status `json:"status,omitempty"`
}

// PeerAuthenticationList is a list of PeerAuthentication.
//
// +kubebuilder:object:root=true
type PeerAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []PeerAuthentication `json:"items"`
}

// MTLSMode is the mutual TLS mode of a PeerAuthentication.
//
// +kubebuilder:validation:Enum=UNSET;DISABLE;PERMISSIVE;STRICT
type MTLSMode string

// Mutual TLS modes.
const (
	// MTLSUnset inherits the mode from the parent (namespace, then mesh; PERMISSIVE by default).
	MTLSUnset MTLSMode = "UNSET"
	// MTLSDisable accepts only plaintext.
	MTLSDisable MTLSMode = "DISABLE"
	// MTLSPermissive accepts plaintext and mutual TLS.
	MTLSPermissive MTLSMode = "PERMISSIVE"
	// MTLSStrict accepts only mutual TLS.
	MTLSStrict MTLSMode = "STRICT"
)

// PeerAuthenticationSpec is the body of a PeerAuthentication, field for field Istio's
// istio.security.v1beta1.PeerAuthentication.
type PeerAuthenticationSpec struct {
	// Selector chooses the workloads; empty means the namespace (the mesh in the root
	// namespace).
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// MTLS is the mode for every port not listed in PortLevelMTLS.
	// +optional
	MTLS *MutualTLS `json:"mtls,omitempty"`
	// PortLevelMTLS overrides the mode per workload (target) port, keyed by port number.
	// It needs a selector.
	// +optional
	PortLevelMTLS map[string]MutualTLS `json:"portLevelMtls,omitempty"`
}

// MutualTLS holds a mode.
type MutualTLS struct {
	// Mode of mutual TLS; UNSET inherits.
	// +optional
	Mode MTLSMode `json:"mode,omitempty"`
}
