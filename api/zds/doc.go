// Package zds holds the protobuf messages of the hand-off protocol between the node
// agent (ambit-cni-node), which owns pod enrollment, and ztunnel, which proxies for the
// enrolled pods. zds.proto is the source of truth; zds.pb.go is generated from it by
// `make generate`.
package zds

//go:generate protoc --go_out=. --go_opt=paths=source_relative zds.proto
