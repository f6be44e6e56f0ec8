// Package netns finds and enters pods' network namespaces. A new pod's namespace comes
// from the CNI plugin (which opens CNI_NETNS and passes the descriptor); a running
// pod's is found through its processes: every container process of a pod sits in a
// cgroup whose path names the pod UID, and /proc/<pid>/ns/net of any of them is the
// pod's network namespace.
package netns
