package model

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	securityv1 "github.com/ambit-mesh/ambit/api/security/v1"
)

// DecodeInputs reads Kubernetes manifests (YAML or JSON documents separated by ---)
// into an Inputs snapshot, the way tests and offline tools feed the model. Kinds the
// model does not read are skipped; a document that does not parse is an error.
func DecodeInputs(r io.Reader) (*Inputs, error) {
	in := &Inputs{}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return in, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := in.add(tm.APIVersion, tm.Kind, doc); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
}

func (in *Inputs) add(apiVersion, kind string, doc []byte) error {
	if apiVersion == securityv1.GroupName+"/v1beta1" { // served with the same schema
		apiVersion = securityv1.SchemeGroupVersion.String()
	}
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return decodeInto(doc, &in.Namespaces)
	case "v1/Pod":
		return decodeInto(doc, &in.Pods)
	case "v1/Service":
		return decodeInto(doc, &in.Services)
	case "v1/ServiceAccount":
		return decodeInto(doc, &in.ServiceAccounts)
	case gwv1.GroupVersion.String() + "/Gateway":
		return decodeInto(doc, &in.Gateways)
	case gwv1.GroupVersion.String() + "/HTTPRoute":
		return decodeInto(doc, &in.HTTPRoutes)
	case gwv1.GroupVersion.String() + "/GRPCRoute":
		return decodeInto(doc, &in.GRPCRoutes)
	case gwv1beta1.GroupVersion.String() + "/ReferenceGrant":
		return decodeInto(doc, &in.ReferenceGrants)
	case securityv1.SchemeGroupVersion.String() + "/AuthorizationPolicy":
		return decodeInto(doc, &in.AuthorizationPolicies)
	case securityv1.SchemeGroupVersion.String() + "/PeerAuthentication":
		return decodeInto(doc, &in.PeerAuthentications)
	}
	return nil
}

func decodeInto[T any](doc []byte, list *[]*T) error {
	obj := new(T)
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}
