package strict

import (
	"crypto/ed25519"

	"github.com/hdevalence/ed25519consensus"

	"github.com/farthing-iot/farthing/protocol"
)

// The gateway's Ed25519 verification rule is ZIP-215 (the rule of
// github.com/hdevalence/ed25519consensus), on every path: single tickets,
// batches, aggregates a receiver checks, and `farthing verify`.
//
// ZIP-215 checks the cofactored equation [8][S]B = [8]R + [8][k]A and
// accepts non-canonical encodings of A and R (S must still be below the
// group order). It accepts every signature RFC 8032's cofactorless check
// (crypto/ed25519) accepts, and a few more that only a signer crafting
// small-order components can produce. Its point is that one signature gets
// one answer however it is checked: a batch verifier can only be exact
// for the cofactored equation, so a gateway that batches and verifies one
// by one must use it for both, or a ticket's fate would depend on which
// path it took. Signatures made by crypto/ed25519 and devicefw verify the
// same under both rules.

// Ed25519Verifier verifies Ed25519 signatures by ZIP-215. It is safe for
// concurrent use.
type Ed25519Verifier struct {
	pub ed25519.PublicKey
	kid [protocol.KeyIDLen]byte
}

// NewEd25519Verifier returns a verifier for pub.
func NewEd25519Verifier(pub ed25519.PublicKey) (*Ed25519Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, protocol.ErrKeySize
	}
	return &Ed25519Verifier{pub: pub, kid: protocol.KeyIDOf(protocol.AlgEdDSA, pub)}, nil
}

// KeyID returns the id of the public key.
func (v *Ed25519Verifier) KeyID() []byte { return v.kid[:] }

// Algorithm returns AlgEdDSA.
func (v *Ed25519Verifier) Algorithm() protocol.Algorithm { return protocol.AlgEdDSA }

// Verify checks sig over toBeSigned by ZIP-215.
func (v *Ed25519Verifier) Verify(toBeSigned, sig []byte) error {
	if !VerifyEd25519(v.pub, toBeSigned, sig) {
		return protocol.ErrBadSignature
	}
	return nil
}

// VerifyEd25519 reports whether sig is a valid signature of msg by pub,
// by ZIP-215.
func VerifyEd25519(pub ed25519.PublicKey, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519consensus.Verify(pub, msg, sig)
}

// Ed25519Batch verifies many signatures at once, by the same rule as
// VerifyEd25519. Verify answers for each signature: if the batch equation
// fails, it falls back to checking each one alone, so a batch never
// accepts what single verification refuses, nor refuses what it accepts.
type Ed25519Batch struct {
	bv   ed25519consensus.BatchVerifier
	sigs []batchEntry
}

type batchEntry struct {
	pub      ed25519.PublicKey
	msg, sig []byte
}

// Add queues one signature. The slices must stay unchanged until Verify
// returns.
func (b *Ed25519Batch) Add(pub ed25519.PublicKey, msg, sig []byte) {
	if len(b.sigs) == 0 {
		b.bv = ed25519consensus.NewBatchVerifier()
	}
	b.sigs = append(b.sigs, batchEntry{pub, msg, sig})
	b.bv.Add(pub, msg, sig) // a malformed key or signature fails the batch
}

// Len returns the number of signatures queued.
func (b *Ed25519Batch) Len() int { return len(b.sigs) }

// Verify sets ok[i] for the i-th signature added, empties the batch, and
// returns how many were valid. len(ok) must be at least Len().
func (b *Ed25519Batch) Verify(ok []bool) int {
	n := len(b.sigs)
	defer func() { clear(b.sigs); b.sigs = b.sigs[:0] }()
	if n == 0 {
		return 0
	}
	if n > 1 && b.bv.Verify() {
		for i := range n {
			ok[i] = true
		}
		return n
	}
	good := 0
	for i, e := range b.sigs {
		ok[i] = VerifyEd25519(e.pub, e.msg, e.sig)
		if ok[i] {
			good++
		}
	}
	return good
}
