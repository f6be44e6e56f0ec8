#!/bin/sh
# Concatenates the Gateway API standard-channel CRDs of the module version in go.mod.
set -eu
out=$1
go mod download sigs.k8s.io/gateway-api # a fresh module cache has no copy yet
dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)
ver=$(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api)
{
  echo "# Gateway API $ver standard channel CRDs, copied unchanged from sigs.k8s.io/gateway-api"
  echo "# (config/crd/standard) by api/gatewayapi/vendor-crds.sh (make generate). Do not edit."
  for f in "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
    echo "---"
    sed '/^---$/d' "$f"
  done
} >"$out"
