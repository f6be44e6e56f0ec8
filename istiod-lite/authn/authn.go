// Package authn authenticates the mesh proxies that call istiod-lite (xDS and CA):
// each presents its projected ServiceAccount token as "authorization: Bearer <token>"
// gRPC metadata; a TokenReview checks it and its audience, and names the caller's
// ServiceAccount, pod and node.
package authn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ErrUnauthenticated is wrapped by every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// Caller is an authenticated proxy.
type Caller struct {
	Namespace      string
	ServiceAccount string
	// PodName, PodUID and Node come from the token's pod binding; Node is empty for a
	// token bound to no pod.
	PodName string
	PodUID  string
	Node    string
}

// String is the caller for logs: "ns/sa (pod name on node)".
func (c *Caller) String() string {
	return fmt.Sprintf("%s/%s (pod %s on node %s)", c.Namespace, c.ServiceAccount, c.PodName, c.Node)
}

// PodGetter finds a pod; istiod-lite backs it with its informer cache.
type PodGetter interface {
	Pod(namespace, name string) (*corev1.Pod, error)
}

// Token review extra keys set by the API server for pod-bound tokens.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// Reviewer authenticates callers by TokenReview.
type Reviewer struct {
	client   kubernetes.Interface
	audience string
	pods     PodGetter
}

// NewReviewer returns a Reviewer accepting tokens for audience. pods, if set, finds
// the node of a token that names its pod but not its node.
func NewReviewer(client kubernetes.Interface, audience string, pods PodGetter) *Reviewer {
	return &Reviewer{client: client, audience: audience, pods: pods}
}

// Authenticate reads the bearer token of a gRPC call and reviews it.
func (r *Reviewer) Authenticate(ctx context.Context) (*Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(t)
		}
	}
	if token == "" {
		return nil, fmt.Errorf("%w: no bearer token in the authorization metadata", ErrUnauthenticated)
	}
	return r.Review(ctx, token)
}

// Review checks a token with the API server.
func (r *Reviewer) Review(ctx context.Context, token string) (*Caller, error) {
	tr, err := r.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{r.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		return nil, fmt.Errorf("%w: token rejected: %s", ErrUnauthenticated, st.Error)
	}
	if !slices.Contains(st.Audiences, r.audience) {
		return nil, fmt.Errorf("%w: token is not for audience %q", ErrUnauthenticated, r.audience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return nil, fmt.Errorf("%w: %q is not a service account", ErrUnauthenticated, st.User.Username)
	}
	c := &Caller{Namespace: ns, ServiceAccount: sa}
	first := func(k string) string {
		if v := st.User.Extra[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	c.PodName, c.PodUID, c.Node = first(extraPodName), first(extraPodUID), first(extraNodeName)
	if c.Node == "" && c.PodName != "" && r.pods != nil {
		pod, err := r.pods.Pod(ns, c.PodName)
		if err == nil && string(pod.UID) == c.PodUID {
			c.Node = pod.Spec.NodeName
		}
	}
	return c, nil
}
