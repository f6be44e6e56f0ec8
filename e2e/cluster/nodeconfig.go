package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// writeNodeConfigs writes the node's containerd, CNI, kubelet and kube-proxy
// configuration. Kubernetes component configs are written as JSON, which their YAML
// loaders read unchanged.
func (c Config) writeNodeConfigs(n node) error {
	files := map[string]string{
		filepath.Join(n.Dir, "containerd.toml"):                      containerdConfig(),
		filepath.Join(n.Dir, "resolv.conf"):                          fmt.Sprintf("nameserver %s\nsearch %s\n", clusterDNSVIP, clusterDomain),
		filepath.Join(n.root("/etc/cni/net.d"), "10-ambit.conflist"): cniConfig(n),
	}
	kl, err := kubeletConfig(c, n)
	if err != nil {
		return err
	}
	files[filepath.Join(n.Dir, "kubelet.yaml")] = kl
	kp, err := kubeProxyConfig(n)
	if err != nil {
		return err
	}
	files[filepath.Join(n.Dir, "kube-proxy.yaml")] = kp
	for path, body := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := c.writeKubeconfig(filepath.Join(n.Dir, "kubelet.kubeconfig"), inClusterAPI(), n.Name+"-kubelet-client"); err != nil {
		return err
	}
	return c.writeKubeconfig(filepath.Join(n.Dir, "kube-proxy.kubeconfig"), inClusterAPI(), "kube-proxy")
}

// containerdConfig is containerd 1.6's config (version 2). Paths are the standard ones:
// the node's mount namespace binds its own directories over them.
// restrict_oom_score_adj is required on hosts without CAP_SYS_RESOURCE.
func containerdConfig() string {
	return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "/run/containerd/containerd.sock"

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + PauseImage + `"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "/run/containerd/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
`
}

// cniConfig is the node's conflist: bridge + host-local + portmap. Ambit's chained
// plugin appends itself to this list when its node agent is installed.
func cniConfig(n node) string {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "ambit-" + n.Netns,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "hairpinMode": true, "ipMasq": false,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": "/var/lib/cni/networks",
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return string(b) + "\n"
}

func kubeletConfig(c Config, n node) (string, error) {
	conf := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            n.IP.String(),
		"port":               10250,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        10248,
		"authentication": map[string]any{
			"anonymous": map[string]bool{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]string{"clientCAFile": c.pki("ca.crt")},
		},
		"authorization":            map[string]string{"mode": "Webhook"},
		"tlsCertFile":              c.pki(n.Name + "-kubelet-serving.crt"),
		"tlsPrivateKeyFile":        c.pki(n.Name + "-kubelet-serving.key"),
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               "/" + n.Cgroup,
		"cgroupsPerQOS":            true,
		"enforceNodeAllocatable":   []string{"pods"},
		"failSwapOn":               false,
		"containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
		"podLogsDir":               "/var/log/pods",
		"clusterDNS":               []string{clusterDNSVIP.String()},
		"clusterDomain":            clusterDomain,
		"resolvConf":               filepath.Join(n.Dir, "resolv.conf"),
		"maxPods":                  60,
		"podCIDR":                  n.PodCIDR.String(),
		// Every node sees the whole machine's memory and disk: only evict in earnest.
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%",
			"imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
		"nodeStatusReportFrequency":   "10s",
		"nodeStatusUpdateFrequency":   "5s",
		"syncFrequency":               "10s",
		"fileCheckFrequency":          "10s",
		"runtimeRequestTimeout":       "2m",
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	return string(b) + "\n", err
}

func kubeProxyConfig(n node) (string, error) {
	conf := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   map[string]string{"kubeconfig": filepath.Join(n.Dir, "kube-proxy.kubeconfig")},
		"hostnameOverride":   n.Name,
		"bindAddress":        n.IP.String(),
		"healthzBindAddress": "127.0.0.1:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"mode":               "iptables",
		"clusterCIDR":        clusterCIDR.String(),
		// No br_netfilter here: masquerade all Service traffic so replies between pods
		// on one bridge come back through the node's conntrack.
		"iptables": map[string]any{"masqueradeAll": true, "localhostNodePorts": false},
		// Zeroes leave the host-wide conntrack sysctls alone.
		"conntrack": map[string]any{
			"maxPerCore": 0, "min": 0,
			"tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
		},
		"nodePortAddresses": []string{n.IP.String() + "/32"},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	return string(b) + "\n", err
}
