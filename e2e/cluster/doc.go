// Package cluster runs a real Kubernetes cluster on one machine for trying Ambit and for
// its end-to-end tests: etcd and the control plane in one network namespace, and every
// worker node in its own network and mount namespace with its own containerd, runc,
// kubelet and kube-proxy. Nothing is attached to the host's network namespace; kubectl
// reaches the API server through a forward on 127.0.0.1.
//
// Up is idempotent and Down removes every namespace, mount, cgroup, process and file Up
// created. Processes are recorded by pid and start time so that only processes this
// package started are ever signalled.
package cluster
