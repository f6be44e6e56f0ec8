//go:build tools

// Package coredns pins the CoreDNS release the local cluster runs as its DNS
// server. It is a separate module so CoreDNS's dependency graph never enters
// the main module; the binary is built with
// `go build github.com/coredns/coredns` from this directory.
package coredns

import (
	_ "github.com/coredns/coredns"
)
