package authn

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// reviewing answers TokenReviews from a table of token -> status, as the API server
// would, echoing only the audiences it was asked for that the token carries.
func reviewing(tokens map[string]authnv1.TokenReviewStatus) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		st, ok := tokens[tr.Spec.Token]
		if !ok {
			st = authnv1.TokenReviewStatus{Error: "invalid token"}
		}
		tr.Status = st
		return true, tr, nil
	})
	return c
}

type pods map[string]*corev1.Pod

func (p pods) Pod(ns, name string) (*corev1.Pod, error) {
	if pod, ok := p[ns+"/"+name]; ok {
		return pod, nil
	}
	return nil, errors.New("not found")
}

func TestAuthenticate(t *testing.T) {
	user := func(name string, extra map[string]authnv1.ExtraValue) authnv1.UserInfo {
		return authnv1.UserInfo{Username: name, Extra: extra}
	}
	client := reviewing(map[string]authnv1.TokenReviewStatus{
		"ztunnel-a": {Authenticated: true, Audiences: []string{"istio-ca"}, User: user("system:serviceaccount:istio-system:ztunnel",
			map[string]authnv1.ExtraValue{extraPodName: {"ztunnel-x"}, extraPodUID: {"u1"}, extraNodeName: {"node-a"}})},
		"old-apiserver": {Authenticated: true, Audiences: []string{"istio-ca"}, User: user("system:serviceaccount:istio-system:ztunnel",
			map[string]authnv1.ExtraValue{extraPodName: {"ztunnel-y"}, extraPodUID: {"u2"}})},
		"wrong-audience": {Authenticated: true, Audiences: []string{"kubernetes"}, User: user("system:serviceaccount:a:b", nil)},
		"a-user":         {Authenticated: true, Audiences: []string{"istio-ca"}, User: user("alice", nil)},
	})
	r := NewReviewer(client, "istio-ca", pods{"istio-system/ztunnel-y": {
		ObjectMeta: metav1.ObjectMeta{UID: types.UID("u2")}, Spec: corev1.PodSpec{NodeName: "node-b"}}})
	tests := []struct {
		token    string
		wantNode string
		wantErr  bool
	}{
		{token: "ztunnel-a", wantNode: "node-a"},
		{token: "old-apiserver", wantNode: "node-b"},
		{token: "wrong-audience", wantErr: true},
		{token: "a-user", wantErr: true},
		{token: "forged", wantErr: true},
		{token: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			ctx := context.Background()
			if tt.token != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tt.token))
			}
			c, err := r.Authenticate(ctx)
			if tt.wantErr {
				if !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("error = %v, want ErrUnauthenticated", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Namespace != "istio-system" || c.ServiceAccount != "ztunnel" || c.Node != tt.wantNode {
				t.Errorf("caller %+v, want istio-system/ztunnel on %s", c, tt.wantNode)
			}
		})
	}
}
