// Command crdversions adds served-only versions to generated CRDs (make generate): an
// Istio user's manifests may say security.istio.io/v1beta1, whose schema is the same
// as v1's, so each listed CRD serves that version too (no conversion needed, v1
// stays the storage version).
//
// Usage: crdversions -served v1beta1 FILE...
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	served := flag.String("served", "", "comma-separated versions to serve with the schema of the storage version")
	flag.Parse()
	if *served == "" || flag.NArg() == 0 {
		log.Fatal("usage: crdversions -served v1beta1 FILE...")
	}
	for _, f := range flag.Args() {
		if err := addVersions(f, strings.Split(*served, ",")); err != nil {
			log.Fatal(err)
		}
	}
}

func addVersions(path string, names []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CRD: %w", err)
	}
	var crd map[string]any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	var storage map[string]any
	for _, v := range versions {
		if vm, ok := v.(map[string]any); ok && vm["storage"] == true {
			storage = vm
		}
	}
	if storage == nil {
		return fmt.Errorf("%s: %w", path, errors.New("no storage version"))
	}
	for _, name := range names {
		for _, v := range versions {
			if vm, ok := v.(map[string]any); ok && vm["name"] == name {
				return fmt.Errorf("%s: version %s already present", path, name)
			}
		}
		extra := map[string]any{}
		for k, v := range storage {
			extra[k] = v
		}
		extra["name"], extra["served"], extra["storage"] = name, true, false
		versions = append(versions, extra)
	}
	spec["versions"] = versions
	out, err := yaml.Marshal(crd)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, append([]byte("---\n"), out...), 0o644); err != nil {
		return fmt.Errorf("write CRD: %w", err)
	}
	return nil
}
