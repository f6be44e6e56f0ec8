package identity

import (
	"bytes"
	"context"
	"fmt"
	"os"
)

// TokenCredentials are gRPC per-RPC credentials: every call carries
// "authorization: Bearer <token>", the token read from File at each call
// (kubelet rotates projected tokens). They cover xDS and the CA on one
// connection; use them with a CAClient that has no token file of its own.
type TokenCredentials struct {
	File string
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t TokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := os.ReadFile(t.File)
	if err != nil {
		return nil, fmt.Errorf("identity: read token: %w", err)
	}
	tok = bytes.TrimSpace(tok)
	if len(tok) == 0 {
		return nil, fmt.Errorf("identity: token file %s is empty", t.File)
	}
	return map[string]string{"authorization": "Bearer " + string(tok)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: a
// token is never sent in the clear.
func (TokenCredentials) RequireTransportSecurity() bool { return true }
