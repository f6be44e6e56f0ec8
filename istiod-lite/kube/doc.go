// Package kube connects istiod-lite to the Kubernetes API: client-go informers on
// everything the model reads, a level-triggered loop that rebuilds the model from the
// informer caches whenever anything changed (coalescing bursts) and hands it to its
// consumers, and the status writer that reports, on every policy the model read,
// whether it was accepted and why not.
package kube
