//go:build !cgo

package pkcs11key

import (
	"crypto/ed25519"

	"github.com/farthing-iot/farthing/protocol"
)

// Signer is unavailable without cgo.
type Signer struct{}

// Open refuses: this build has no PKCS#11.
func Open(Config) (*Signer, error) { return nil, ErrNoPKCS11 }

// Generate refuses: this build has no PKCS#11.
func Generate(Config) (ed25519.PublicKey, error) { return nil, ErrNoPKCS11 }

// Algorithm is EdDSA.
func (*Signer) Algorithm() protocol.Algorithm { return protocol.AlgEdDSA }

// KeyID is none.
func (*Signer) KeyID() []byte { return nil }

// Sign refuses.
func (*Signer) Sign(dst, _ []byte) ([]byte, error) { return dst, ErrNoPKCS11 }

// Public is none.
func (*Signer) Public() ed25519.PublicKey { return nil }

// Close does nothing.
func (*Signer) Close() error { return nil }
