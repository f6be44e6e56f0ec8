# Ambit. Set-up on a fresh machine is two commands: `make up` and `make test`.
# Both need root (network namespaces, mounts, cgroups); both first install the Debian
# packages the cluster needs if any is missing (scripts/install-deps).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := $(CURDIR)/bin
CLUSTER := $(BIN)/ambit-cluster
TOOL    := $(GO) tool -modfile=tools/go.mod
# gRPC without golang.org/x/net/trace: its templates keep every exported method in
# the binary (ztunnel 25.8 -> 19.6 MB). The images use the same tags (e2e/image).
TAGS    := grpcnotrace
# Unit and privileged tests; the e2e package has its own target (it brings up a cluster).
UNIT_PKGS = $$($(GO) list ./... | grep -v '^github.com/ambit-mesh/ambit/e2e$$')

.PHONY: all deps build test unit e2e lint generate generate-check bench images up down status clean

all: build

deps:
	scripts/install-deps

build:
	$(GO) build -tags $(TAGS) -o $(BIN)/ ./cmd/...

# make test: every test, privileged ones included; a skipped test fails the run.
# The first run builds Kubernetes from source (minutes): `prepare` does it up front, with
# progress, so no test waits on it.
test: deps build
	$(CLUSTER) prepare
	$(MAKE) unit e2e

unit: build
	AMBIT_REQUIRE_PRIVILEGED=1 $(GO) test -tags $(TAGS) -count=1 -timeout 30m -v $(UNIT_PKGS) 2>&1 | tee $(BIN)/unit-test.log
	@! grep -- '--- SKIP' $(BIN)/unit-test.log || { echo 'tests were skipped under make test: not allowed'; exit 1; }

e2e: build
	AMBIT_REQUIRE_PRIVILEGED=1 $(GO) test -tags $(TAGS) -count=1 -v -timeout 45m ./e2e/ 2>&1 | tee $(BIN)/e2e-test.log
	@! grep -- '--- SKIP' $(BIN)/e2e-test.log || { echo 'e2e tests were skipped under make test: not allowed'; exit 1; }

lint:
	$(TOOL) golangci-lint run ./...

# Code generators are pinned in tools/codegen/go.mod and built into bin/tools; protoc
# comes from Debian (protobuf-compiler). //go:generate lines call them by name.
generate:
	$(GO) build -modfile=tools/codegen/go.mod -o $(BIN)/tools/ \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		sigs.k8s.io/controller-tools/cmd/controller-gen
	PATH=$(BIN)/tools:$$PATH $(GO) generate ./...

# CI: regenerating must not change anything committed.
generate-check: generate
	@git diff --exit-code --stat -- . ':!go.sum' || { echo 'generated files are stale: run make generate and commit'; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api manifests)" || { git status --short -- api manifests; echo 'make generate created files that are not committed'; exit 1; }

# The e2e package has no benchmarks; leaving it out spares bringing a cluster up.
bench:
	scripts/install-deps --bench
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem -timeout 30m $(UNIT_PKGS)

images: build
	$(CLUSTER) images

up: deps build
	$(CLUSTER) up
	@echo
	@echo "kubectl --kubeconfig $(CURDIR)/.ambit/kubeconfig get pods -A"

down: build
	$(CLUSTER) down

status: build
	$(CLUSTER) status

clean: down
	rm -rf $(BIN)
