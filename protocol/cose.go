package protocol

// COSE message tags (RFC 9052 section 2, IANA "CBOR Tags").
const (
	TagMac0  uint64 = 17
	TagSign1 uint64 = 18
)

// COSE header labels (RFC 9052 section 3.1).
const (
	HeaderAlgorithm int64 = 1
	HeaderKeyID     int64 = 4
)

// Context strings of the structures that are signed or MAC'd
// (RFC 9052 sections 4.4 and 6.3).
const (
	contextSignature1 = "Signature1"
	contextMAC0       = "MAC0"
)

// Envelope is a parsed COSE_Sign1 or COSE_Mac0 message. Protected and
// Payload are the byte strings exactly as received, since the signature
// covers them as bytes. The slices alias the input.
//
//	COSE_Sign1 = #6.18([protected: bstr .cbor {1: -8, 4: kid}, unprotected: {}, payload: bstr, signature: bstr .size 64])
//	COSE_Mac0  = #6.17([protected: bstr .cbor {1: 5, 4: kid},  unprotected: {}, payload: bstr, tag: bstr .size 32])
type Envelope struct {
	Alg       Algorithm
	KeyID     []byte
	Protected []byte
	Payload   []byte
	Signature []byte
}

// AppendProtected appends the serialized protected header {1: alg, 4: kid}.
func AppendProtected(dst []byte, alg Algorithm, kid []byte) []byte {
	dst = appendHead(dst, majorMap, 2)
	dst = appendUint(dst, uint64(HeaderAlgorithm))
	dst = appendInt(dst, int64(alg))
	dst = appendUint(dst, uint64(HeaderKeyID))
	return appendBytes(dst, kid)
}

// AppendToBeSigned appends the Sig_structure (for EdDSA) or MAC_structure
// (for HMAC) of a message with an empty external_aad:
//
//	Sig_structure = ["Signature1", body_protected: bstr, external_aad: bstr, payload: bstr]
//	MAC_structure = ["MAC0", protected: bstr, external_aad: bstr, payload: bstr]
func AppendToBeSigned(dst []byte, alg Algorithm, protected, payload []byte) []byte {
	dst = appendTBSPrefix(dst, alg, protected, len(payload))
	return append(dst, payload...)
}

func appendTBSPrefix(dst []byte, alg Algorithm, protected []byte, payloadLen int) []byte {
	dst = appendHead(dst, majorArray, 4)
	if alg.Tag() == TagMac0 {
		dst = appendText(dst, contextMAC0)
	} else {
		dst = appendText(dst, contextSignature1)
	}
	dst = appendBytes(dst, protected)
	dst = appendHead(dst, majorBytes, 0)
	return appendHead(dst, majorBytes, uint64(payloadLen))
}

// AppendEnvelope appends the tagged COSE message of e.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	dst = appendHead(dst, majorTag, e.Alg.Tag())
	dst = appendHead(dst, majorArray, 4)
	dst = appendBytes(dst, e.Protected)
	dst = appendHead(dst, majorMap, 0)
	dst = appendBytes(dst, e.Payload)
	return appendBytes(dst, e.Signature)
}

// Verify checks e's signature or MAC with v. scratch is used to build the
// structure that was signed; pass a buffer of MaxMessageSize+64 bytes to
// avoid allocating.
func (e *Envelope) Verify(v Verifier, scratch []byte) error {
	if v.Algorithm() != e.Alg {
		return &Error{Reason: ReasonUnsupportedAlg, Detail: "message uses " + e.Alg.String() + ", key is for " + v.Algorithm().String()}
	}
	tbs := AppendToBeSigned(scratch[:0], e.Alg, e.Protected, e.Payload)
	if err := v.Verify(tbs, e.Signature); err != nil {
		return ErrBadSignature
	}
	return nil
}

// ParseEnvelope parses a tagged COSE_Sign1 or COSE_Mac0 with the canonical
// reader of the device path: it accepts only the deterministic encoding
// AppendEnvelope writes, with exactly {alg, kid} protected and nothing
// unprotected. The payload is not parsed. The fields of e alias b.
func ParseEnvelope(b []byte, e *Envelope) error {
	r := reader{b: b}
	major, tag := r.head()
	if r.err != nil {
		return r.err
	}
	if major != majorTag || (tag != TagSign1 && tag != TagMac0) {
		return newError(ReasonUnexpectedTag, "not a tagged COSE_Sign1 or COSE_Mac0")
	}
	if n := r.expect(majorArray, "COSE message"); r.err == nil && n != 4 {
		return newError(ReasonMalformed, "COSE message is not an array of 4")
	}
	e.Protected = r.bytes(64, "protected header")
	if r.err != nil {
		return r.err
	}
	if err := parseProtected(e, tag); err != nil {
		return err
	}
	if n := r.expect(majorMap, "unprotected header"); r.err == nil && n != 0 {
		return newError(ReasonBadHeader, "unprotected header is not empty")
	}
	e.Payload = r.bytes(MaxMessageSize, "payload")
	e.Signature = r.bytes(64, "signature")
	r.done()
	if r.err != nil {
		return r.err
	}
	if len(e.Signature) != e.Alg.SignatureSize() {
		return newError(ReasonBadSignature, "signature has the wrong length")
	}
	return nil
}

func parseProtected(e *Envelope, tag uint64) error {
	r := reader{b: e.Protected}
	if n := r.expect(majorMap, "protected header"); r.err == nil && n != 2 {
		return newError(ReasonBadHeader, "protected header is not exactly {alg, kid}")
	}
	if k := r.uint("header label"); r.err == nil && k != uint64(HeaderAlgorithm) {
		return newError(ReasonBadHeader, "protected header is not exactly {alg, kid}")
	}
	e.Alg = Algorithm(r.int("alg"))
	if k := r.uint("header label"); r.err == nil && k != uint64(HeaderKeyID) {
		return newError(ReasonBadHeader, "protected header is not exactly {alg, kid}")
	}
	e.KeyID = r.bytes(MaxKeyIDLen, "kid")
	r.done()
	if r.err != nil {
		return r.err
	}
	if len(e.KeyID) == 0 {
		return newError(ReasonBadHeader, "kid is empty")
	}
	if e.Alg.Tag() == 0 {
		return newError(ReasonUnsupportedAlg, "algorithm "+e.Alg.String()+" is not supported")
	}
	if e.Alg.Tag() != tag {
		return newError(ReasonUnsupportedAlg, e.Alg.String()+" does not go with this COSE message tag")
	}
	return nil
}

// tbsRoom is the most bytes a to-be-signed prefix can take before the
// payload: array head, context string, protected header, external_aad and
// the payload's byte-string head.
const tbsRoom = 64

// Encoder encodes and seals Farthing messages. It owns the scratch space
// for the structure that is signed, so sealing allocates nothing when dst
// has room. An Encoder is not safe for concurrent use; its zero value is
// ready. It is about 1.5 KB: firmware keeps one.
type Encoder struct {
	buf  [tbsRoom + MaxMessageSize]byte
	prot [2 + 2 + 9 + 2 + MaxKeyIDLen]byte
	pre  [tbsRoom]byte
	sig  [64]byte
}

// payload returns the empty slice into which a payload is encoded.
func (e *Encoder) payload() []byte { return e.buf[tbsRoom:tbsRoom:len(e.buf)] }

// seal signs payload, which must have been encoded into e.payload(), and
// appends the tagged COSE message to dst.
func (e *Encoder) seal(dst []byte, s Signer, payload []byte, max int) ([]byte, error) {
	if len(payload) == 0 || len(payload) > MaxMessageSize || &payload[0] != &e.buf[tbsRoom] {
		return dst, newError(ReasonTooLarge, "payload does not fit")
	}
	alg, kid := s.Algorithm(), s.KeyID()
	if alg.Tag() == 0 {
		return dst, newError(ReasonUnsupportedAlg, "signer algorithm "+alg.String())
	}
	if len(kid) == 0 || len(kid) > MaxKeyIDLen {
		return dst, newError(ReasonBadHeader, "signer key id length")
	}
	prot := AppendProtected(e.prot[:0], alg, kid)
	pre := appendTBSPrefix(e.pre[:0], alg, prot, len(payload))
	start := tbsRoom - len(pre)
	copy(e.buf[start:], pre)
	sig, err := s.Sign(e.sig[:0], e.buf[start:tbsRoom+len(payload)])
	if err != nil {
		return dst, err
	}
	if len(sig) != alg.SignatureSize() {
		return dst, newError(ReasonBadSignature, "signer returned a signature of the wrong length")
	}
	env := Envelope{Alg: alg, KeyID: kid, Protected: prot, Payload: payload, Signature: sig}
	n := len(dst)
	dst = AppendEnvelope(dst, &env)
	if len(dst)-n > max {
		return dst[:n], newError(ReasonTooLarge, "message is larger than its limit")
	}
	return dst, nil
}
