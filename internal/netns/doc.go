// Package netns opens sockets inside other network namespaces. A socket belongs to the
// namespace it was created in for life, so ztunnel can listen and dial inside every
// enrolled pod's namespace from its own process: the socket is created on an OS thread
// switched into the target namespace, and the thread is switched back before it is
// returned to the Go scheduler.
package netns
