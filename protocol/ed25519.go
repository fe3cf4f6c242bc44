//go:build !tinygo || farthing_ed25519

// Ed25519 in a firmware (TinyGo) build is opt-in, with the build tag
// farthing_ed25519: crypto/ed25519 brings the standard library's FIPS
// module (its DRBG, AES, SHA-3 and SHA-512, with their self-tests) into
// the image, some 60 KB of flash that an HMAC or payword device never
// uses. Every other build has it.

package protocol

import "crypto/ed25519"

// Ed25519Signer signs COSE_Sign1 messages with EdDSA over Ed25519. It is
// safe for concurrent use.
type Ed25519Signer struct {
	priv ed25519.PrivateKey
	kid  [KeyIDLen]byte
}

// NewEd25519Signer returns a signer for a 64-byte Ed25519 private key. The
// key id is derived from the public key.
func NewEd25519Signer(priv ed25519.PrivateKey) (*Ed25519Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, ErrKeySize
	}
	s := &Ed25519Signer{priv: priv}
	s.kid = KeyIDOf(AlgEdDSA, priv[32:])
	return s, nil
}

// Algorithm returns AlgEdDSA.
func (s *Ed25519Signer) Algorithm() Algorithm { return AlgEdDSA }

// KeyID returns the id of the signer's public key.
func (s *Ed25519Signer) KeyID() []byte { return s.kid[:] }

// Sign appends the 64-byte signature of toBeSigned to dst. ed25519.Sign is
// outlined so that its result stays on the stack: this allocates nothing.
func (s *Ed25519Signer) Sign(dst, toBeSigned []byte) ([]byte, error) {
	return append(dst, ed25519.Sign(s.priv, toBeSigned)...), nil
}

// Ed25519Verifier verifies COSE_Sign1 messages signed with one Ed25519
// public key. It is safe for concurrent use.
type Ed25519Verifier struct {
	pub ed25519.PublicKey
	kid [KeyIDLen]byte
}

// NewEd25519Verifier returns a verifier for a 32-byte Ed25519 public key.
func NewEd25519Verifier(pub ed25519.PublicKey) (*Ed25519Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, ErrKeySize
	}
	v := &Ed25519Verifier{pub: pub}
	v.kid = KeyIDOf(AlgEdDSA, pub)
	return v, nil
}

// Algorithm returns AlgEdDSA.
func (v *Ed25519Verifier) Algorithm() Algorithm { return AlgEdDSA }

// KeyID returns the id of the public key.
func (v *Ed25519Verifier) KeyID() []byte { return v.kid[:] }

// Verify checks an Ed25519 signature with the rules of crypto/ed25519.
func (v *Ed25519Verifier) Verify(toBeSigned, sig []byte) error {
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(v.pub, toBeSigned, sig) {
		return ErrBadSignature
	}
	return nil
}
