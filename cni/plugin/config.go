// Package plugin is the ambit-cni chained CNI plugin. It is called after the interface
// plugins (bridge, portmap, ...) with their result, asks the node agent whether the pod
// is ambient and, if so, to enroll it, and passes the previous result on unchanged.
// It fails closed: an ambient pod whose enrollment cannot be confirmed does not start.
package plugin

import (
	"encoding/json"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Type is the plugin's name in a conflist ("type": "ambit-cni").
const Type = "ambit-cni"

// DefaultAgentSocket is where the node agent listens for the plugin.
const DefaultAgentSocket = "/var/run/ambit/cni.sock"

// DefaultTimeout bounds one call to the node agent.
const DefaultTimeout = 30 * time.Second

// Config is the plugin's entry in the conflist.
type Config struct {
	types.PluginConf
	// AgentSocket is the node agent's socket (default DefaultAgentSocket).
	AgentSocket string `json:"agentSocket,omitempty"`
	// TimeoutSeconds bounds one call to the agent (default 30).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// ExcludeNamespaces are never captured and never need the agent (default
	// kube-system), so the cluster's own pods start while the agent is down.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
}

// Timeout is the configured agent call timeout.
func (c *Config) Timeout() time.Duration {
	if c.TimeoutSeconds <= 0 {
		return DefaultTimeout
	}
	return time.Duration(c.TimeoutSeconds) * time.Second
}

// ParseConfig decodes and validates the network configuration on stdin, including the
// previous plugin's result. Errors are CNI error objects.
func ParseConfig(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "ambit-cni: cannot parse network configuration", err.Error())
	}
	if conf.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ambit-cni: cniVersion is required", "")
	}
	if _, _, _, err := version.ParseVersion(conf.CNIVersion); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ambit-cni: invalid cniVersion", err.Error())
	}
	if conf.TimeoutSeconds < 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ambit-cni: timeoutSeconds must not be negative", "")
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = DefaultAgentSocket
	}
	if conf.ExcludeNamespaces == nil {
		conf.ExcludeNamespaces = []string{"kube-system"}
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "ambit-cni: cannot parse prevResult", err.Error())
		}
	}
	return conf, nil
}

// podArgs are the Kubernetes fields of CNI_ARGS (set by the container runtime).
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,staticcheck // names fixed by CNI_ARGS
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,staticcheck // names fixed by CNI_ARGS
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,staticcheck // names fixed by CNI_ARGS
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,staticcheck // names fixed by CNI_ARGS
}

func parseArgs(s string) (podArgs, error) {
	a := podArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, &a); err != nil {
		return a, types.NewError(types.ErrInvalidEnvironmentVariables, "ambit-cni: cannot parse CNI_ARGS", err.Error())
	}
	return a, nil
}

func (a podArgs) isPod() bool { return a.K8S_POD_NAMESPACE != "" && a.K8S_POD_NAME != "" }
