package protocol

// StreamID names one gateway's aggregate stream: the key id of the
// gateway's Ed25519 key (the COSE kid of every aggregate it signs) and the
// stream epoch made with its state file. Aggregate seqs are gapless from 1
// within one stream; a new state file (lost, replaced or restored) starts
// a new epoch, and its seqs start from 1 again.
//
// The stream, not the gateway id, is what a receiver books on: two
// gateways configured with one id still have two keys, and one gateway
// that lost its state still has a new epoch.
type StreamID struct {
	KeyID [KeyIDLen]byte
	Epoch uint64
}

// StreamOf returns the stream of an aggregate signed with kid. A kid of
// another length than KeyIDLen is not a Farthing gateway's.
func StreamOf(kid []byte, epoch uint64) (StreamID, bool) {
	var s StreamID
	if len(kid) != KeyIDLen {
		return s, false
	}
	copy(s.KeyID[:], kid)
	s.Epoch = epoch
	return s, true
}

// String is "KID.EPOCH" in lower-case hex, e.g. "0a1b2c3d4e5f6071.9f3e2d1c0b0a0908".
func (s StreamID) String() string {
	b := make([]byte, 0, 2*KeyIDLen+1+16)
	b = appendHex(b, s.KeyID[:])
	b = append(b, '.')
	return string(appendUintBase(b, s.Epoch, 16))
}

// Key returns the idempotency key of aggregate seq in the stream:
// "KID.EPOCH/SEQ" (SEQ in decimal). It is the HTTP Idempotency-Key and
// the JetStream Nats-Msg-Id of the aggregate, so two gateways that share
// a gateway id never collide in an upstream's deduplication.
func (s StreamID) Key(seq uint64) string {
	return s.String() + "/" + itoa(int64(seq))
}

// DefaultGatewayID is the gateway id a gateway takes when none is
// configured: "gw-" and its key id in hex. Unlike a host name, no two
// gateways share it.
func DefaultGatewayID(kid [KeyIDLen]byte) string {
	return string(appendHex([]byte("gw-"), kid[:]))
}

// appendHex appends b in lower-case hex (encoding/hex is not on the
// device path's import list).
func appendHex(dst, b []byte) []byte {
	const digits = "0123456789abcdef"
	for _, c := range b {
		dst = append(dst, digits[c>>4], digits[c&15])
	}
	return dst
}
