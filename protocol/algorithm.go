package protocol

// Algorithm is a COSE algorithm identifier (IANA "COSE Algorithms" registry).
type Algorithm int64

// The algorithms Farthing speaks.
const (
	// AlgEdDSA is EdDSA with Ed25519 (RFC 9053 section 2.2), for COSE_Sign1.
	AlgEdDSA Algorithm = -8
	// AlgHMAC256 is HMAC with SHA-256 and a 256-bit tag, "HMAC 256/256"
	// (RFC 9053 section 3.1), for COSE_Mac0.
	AlgHMAC256 Algorithm = 5
)

// String returns the algorithm's registry name.
func (a Algorithm) String() string {
	switch a {
	case AlgEdDSA:
		return "EdDSA"
	case AlgHMAC256:
		return "HMAC 256/256"
	}
	return "alg(" + itoa(int64(a)) + ")"
}

// Tag returns the COSE message tag the algorithm is used with: 18
// (COSE_Sign1) for EdDSA, 17 (COSE_Mac0) for HMAC, 0 for others.
func (a Algorithm) Tag() uint64 {
	switch a {
	case AlgEdDSA:
		return TagSign1
	case AlgHMAC256:
		return TagMac0
	}
	return 0
}

// SignatureSize is the length of the algorithm's signature or MAC tag.
func (a Algorithm) SignatureSize() int {
	switch a {
	case AlgEdDSA:
		return 64
	case AlgHMAC256:
		return 32
	}
	return 0
}

// Signer makes the signature or MAC of a COSE message.
type Signer interface {
	// Algorithm is the COSE algorithm the signer uses.
	Algorithm() Algorithm
	// KeyID is the kid put into the protected header (KeyIDLen bytes).
	KeyID() []byte
	// Sign appends the signature or MAC tag of toBeSigned to dst.
	Sign(dst, toBeSigned []byte) ([]byte, error)
}

// Verifier checks the signature or MAC of a COSE message.
type Verifier interface {
	// Algorithm is the COSE algorithm the verifier accepts.
	Algorithm() Algorithm
	// Verify returns nil if sig is valid for toBeSigned, ErrBadSignature
	// (wrapped) otherwise.
	Verify(toBeSigned, sig []byte) error
}
