// Package rules renders and applies the traffic redirection that enrolls a pod: an
// nftables table inside the pod's network namespace that sends its TCP to ztunnel's
// in-pod ports, a policy-routing rule so replies to ztunnel's transparent sockets stay
// local, and a table in the node's network namespace that gives kubelet probes a
// source address the pod exempts from capture.
//
// Rendering is pure (PodRuleset, HostRuleset) and golden-tested; applying is one
// atomic nftables transaction per namespace, idempotent and removable.
package rules
