// Package ca holds the gRPC certificate service istiod-lite serves (CSR in, chain out),
// generated from ca.proto beside it.
package ca

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative ca.proto
