package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// alpnH2 is the only application protocol HBONE speaks over TLS.
const alpnH2 = "h2"

// SVIDSource supplies the X.509-SVIDs of the identities this process acts
// for. It is asked at every TLS handshake, so a source that rotates
// certificates is picked up by new connections without a restart.
type SVIDSource interface {
	SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)
}

// SVIDSourceFunc adapts a function to SVIDSource.
type SVIDSourceFunc func(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error)

// SVID calls f.
func (f SVIDSourceFunc) SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	return f(ctx, id)
}

// certificate fetches id's SVID from src as a TLS certificate.
func certificate(ctx context.Context, src SVIDSource, id spiffeid.ID) (*tls.Certificate, error) {
	svid, err := src.SVID(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("hbone: certificate for %s: %w", id, err)
	case svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil:
		return nil, fmt.Errorf("hbone: certificate for %s: source returned an empty SVID", id)
	case svid.ID != id:
		return nil, fmt.Errorf("hbone: certificate for %s: source returned the SVID of %s", id, svid.ID)
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// clientTLS returns the TLS configuration of a connection presenting src's
// SVID and requiring the server to prove dst, verified against bundles.
// There is no SNI: the server's identity, not a name, is what counts.
func clientTLS(svids SVIDSource, bundles x509bundle.Source, src, dst spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		NextProtos:                  []string{alpnH2},
		DynamicRecordSizingDisabled: true, // see serverTLS
		// Hostname verification is meaningless here; VerifyPeerCertificate
		// does the SPIFFE verification (go-spiffe's tlsconfig does the same).
		InsecureSkipVerify: true,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certificate(cri.Context(), svids, src)
		},
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(bundles, func(id spiffeid.ID, _ [][]*x509.Certificate) error {
			if id != dst {
				return fmt.Errorf("%w: server is %s, want %s", ErrIdentityMismatch, id, dst)
			}
			return nil
		}),
	}
}

// serverTLS returns the TLS configuration of a server presenting id's SVID
// and requiring a client SVID that chains to bundles. Which clients may do
// what is the Handler's business.
func serverTLS(svids SVIDSource, bundles x509bundle.Source, id spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		// Small first records help a browser render early; here they only
		// multiply records (and AEAD calls) for the first 128 KiB of every
		// connection. Writes are batched below TLS anyway (batchConn).
		DynamicRecordSizingDisabled: true,
		ClientAuth:                  tls.RequireAnyClientCert,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certificate(hello.Context(), svids, id)
		},
		VerifyPeerCertificate: tlsconfig.VerifyPeerCertificate(bundles, tlsconfig.AuthorizeAny()),
		// Resumption would skip verifying the client chain against the
		// current bundle.
		SessionTicketsDisabled: true,
	}
}

// peerIdentity checks a completed handshake and returns the peer's
// (already verified) SPIFFE id.
func peerIdentity(cs tls.ConnectionState) (spiffeid.ID, error) {
	if cs.NegotiatedProtocol != alpnH2 {
		return spiffeid.ID{}, fmt.Errorf("hbone: peer negotiated ALPN %q, want %q", cs.NegotiatedProtocol, alpnH2)
	}
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("hbone: peer sent no certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}
