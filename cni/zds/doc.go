// Package zds is the node agent's side of the hand-off to ztunnel: it serves a
// SOCK_SEQPACKET unix socket, and on every ztunnel connection sends a snapshot of the
// enrolled pods (AddWorkload with the pod's netns descriptor, or KeepWorkload), then
// SnapshotSent, then live AddWorkload/DelWorkload. Every message waits for ztunnel's
// Ack. Messages are api/zds protobufs, one per datagram. While two ztunnels are
// connected (a rollout), new pods go to the newest one and removals to both.
package zds
