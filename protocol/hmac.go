package protocol

import "hash"

// HMACKeySize is the size of an HMAC 256/256 key, in bytes.
const HMACKeySize = 32

// HMAC signs and verifies COSE_Mac0 messages with HMAC 256/256. It keeps
// one hash state and one tag buffer, so signing and verifying allocate
// nothing. It is not safe for concurrent use; give each goroutine its own.
type HMAC struct {
	mac hash.Hash
	kid [KeyIDLen]byte
	tag [hashSize]byte
}

// NewHMAC returns an HMAC 256/256 signer and verifier for a 32-byte key.
// The key id is derived from the key (see KeyIDOf).
func NewHMAC(key []byte) (*HMAC, error) {
	if len(key) != HMACKeySize {
		return nil, ErrKeySize
	}
	h := &HMAC{mac: newHMAC(key)}
	h.kid = KeyIDOf(AlgHMAC256, key)
	return h, nil
}

// Algorithm returns AlgHMAC256.
func (h *HMAC) Algorithm() Algorithm { return AlgHMAC256 }

// KeyID returns the key's id.
func (h *HMAC) KeyID() []byte { return h.kid[:] }

// Sign appends the 32-byte MAC of toBeSigned to dst.
func (h *HMAC) Sign(dst, toBeSigned []byte) ([]byte, error) {
	h.mac.Reset()
	h.mac.Write(toBeSigned)
	return append(dst, h.mac.Sum(h.tag[:0])...), nil
}

// Verify checks a MAC in constant time.
func (h *HMAC) Verify(toBeSigned, sig []byte) error {
	h.mac.Reset()
	h.mac.Write(toBeSigned)
	if !equalMAC(h.mac.Sum(h.tag[:0]), sig) {
		return ErrBadSignature
	}
	return nil
}
