// Command ambit-cni is Ambit's chained CNI plugin; the node agent installs it into
// /opt/cni/bin and appends it to the node's conflist. See docs/cni.md.
package main

import (
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambit-mesh/ambit/cni/plugin"
)

func main() {
	// stdout carries the CNI result; logs go to stderr, which the runtime records.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := plugin.Plugin{Stdout: os.Stdout, Log: log}
	skel.PluginMainFuncs(p.Funcs(), version.All, "ambit-cni: Ambit ambient capture (chained CNI plugin)")
}
