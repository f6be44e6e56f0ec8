package v1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AuthorizationPolicy is Istio's access control policy: which sources may reach which
// workloads, services or waypoints. See DESIGN.md 1 for where each kind of rule is
// enforced.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=istio-io;security-istio-io,shortName=ap
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`,description="The operation to take."
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the policy as the user wrote it.
	Spec AuthorizationPolicySpec `json:"spec,omitempty"`
	// Status is written by istiod-lite.
	// +optional
	Status Status `json:"status,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []AuthorizationPolicy `json:"items"`
}

// Action is what a matching AuthorizationPolicy does.
//
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT;CUSTOM
type Action string

// Actions of an AuthorizationPolicy.
const (
	ActionAllow  Action = "ALLOW"
	ActionDeny   Action = "DENY"
	ActionAudit  Action = "AUDIT"
	ActionCustom Action = "CUSTOM"
)

// AuthorizationPolicySpec is the body of an AuthorizationPolicy, field for field
// Istio's istio.security.v1beta1.AuthorizationPolicy.
//
// +kubebuilder:validation:XValidation:rule="(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1",message="only one of targetRefs, targetRef or selector can be set"
type AuthorizationPolicySpec struct {
	// Selector chooses the workloads the policy applies to. Without selector or
	// targetRefs the policy applies to the whole namespace (the whole mesh in the root
	// namespace).
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// TargetRef is the single-target form of TargetRefs (deprecated in Istio).
	// +optional
	TargetRef *PolicyTargetReference `json:"targetRef,omitempty"`
	// TargetRefs attaches the policy to Gateways (waypoints) or Services; it is then
	// enforced by the waypoint.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`
	// Rules to match requests. ALLOW with no rules matches nothing; DENY with no rules
	// matches nothing; an empty rule matches everything.
	// +optional
	Rules []Rule `json:"rules,omitempty"`
	// Action is ALLOW (the default), DENY, AUDIT or CUSTOM.
	// +optional
	Action Action `json:"action,omitempty"`
	// Provider names the external authorizer of a CUSTOM policy.
	// +optional
	Provider *Provider `json:"provider,omitempty"`
}

// Provider names an extension provider for CUSTOM policies.
type Provider struct {
	// Name of the provider in the mesh config.
	// +optional
	Name string `json:"name,omitempty"`
}

// Rule matches requests from all of From, to all of To, under all of When. An empty
// field matches anything.
type Rule struct {
	// From lists sources; a request matches if any source matches.
	// +optional
	From []RuleFrom `json:"from,omitempty"`
	// To lists operations; a request matches if any operation matches.
	// +optional
	To []RuleTo `json:"to,omitempty"`
	// When lists further conditions; all must match.
	// +optional
	When []Condition `json:"when,omitempty"`
}

// RuleFrom wraps a Source, as in Istio's YAML (`from: [{source: {...}}]`).
type RuleFrom struct {
	// Source of the request.
	// +optional
	Source *Source `json:"source,omitempty"`
}

// RuleTo wraps an Operation, as in Istio's YAML (`to: [{operation: {...}}]`).
type RuleTo struct {
	// Operation of the request.
	// +optional
	Operation *Operation `json:"operation,omitempty"`
}

// Source matches the peer of a request. All set fields must match.
type Source struct {
	// Principals are peer identities without the spiffe:// prefix
	// (cluster.local/ns/NS/sa/SA); "*", prefix* and *suffix match too.
	// +optional
	Principals []string `json:"principals,omitempty"`
	// NotPrincipals are principals that must not match.
	// +optional
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// RequestPrincipals are JWT principals (L7; waypoint only).
	// +optional
	RequestPrincipals []string `json:"requestPrincipals,omitempty"`
	// NotRequestPrincipals are JWT principals that must not match (L7).
	// +optional
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	// Namespaces of the peer identity.
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// NotNamespaces are peer namespaces that must not match.
	// +optional
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// IPBlocks are source IPs or CIDRs.
	// +optional
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// NotIPBlocks are source IPs or CIDRs that must not match.
	// +optional
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
	// RemoteIPBlocks are original client IPs (X-Forwarded-For; L7).
	// +optional
	RemoteIPBlocks []string `json:"remoteIpBlocks,omitempty"`
	// NotRemoteIPBlocks are original client IPs that must not match (L7).
	// +optional
	NotRemoteIPBlocks []string `json:"notRemoteIpBlocks,omitempty"`
	// ServiceAccounts of the peer, as SA (policy namespace) or NS/SA.
	// +optional
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// NotServiceAccounts are service accounts that must not match.
	// +optional
	NotServiceAccounts []string `json:"notServiceAccounts,omitempty"`
}

// Operation matches what a request asks for. All set fields must match.
type Operation struct {
	// Hosts are HTTP Host values (L7).
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// NotHosts are hosts that must not match (L7).
	// +optional
	NotHosts []string `json:"notHosts,omitempty"`
	// Ports are destination ports, as strings like Istio.
	// +optional
	Ports []string `json:"ports,omitempty"`
	// NotPorts are destination ports that must not match.
	// +optional
	NotPorts []string `json:"notPorts,omitempty"`
	// Methods are HTTP methods (L7).
	// +optional
	Methods []string `json:"methods,omitempty"`
	// NotMethods are HTTP methods that must not match (L7).
	// +optional
	NotMethods []string `json:"notMethods,omitempty"`
	// Paths are HTTP paths (L7).
	// +optional
	Paths []string `json:"paths,omitempty"`
	// NotPaths are HTTP paths that must not match (L7).
	// +optional
	NotPaths []string `json:"notPaths,omitempty"`
}

// Condition is an extra attribute match (`when:`), such as source.ip or request.headers[x].
type Condition struct {
	// Key is the attribute name.
	Key string `json:"key"`
	// Values of which one must match.
	// +optional
	Values []string `json:"values,omitempty"`
	// NotValues of which none may match.
	// +optional
	NotValues []string `json:"notValues,omitempty"`
}
