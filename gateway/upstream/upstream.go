// Package upstream holds what the gateway's forwarder and its sinks share:
// the aggregate on its way to a provider. Each sink (mqttsink, httpsink,
// jetstreamsink) is a small package that delivers Outgoing values and
// reports success only once the far side confirmed them.
package upstream

// Outgoing is one signed aggregate on its way upstream.
type Outgoing struct {
	Seq      uint64
	Gateway  string
	Provider string
	// Key is the idempotency key of the aggregate's stream and seq
	// (protocol.StreamID.Key: "KID.EPOCH/SEQ"); receivers deduplicate on
	// it, so sending again is harmless, and two gateways that share a
	// gateway id never share a key.
	Key string
	// Bytes is the COSE_Sign1 aggregate, exactly as stored when its window
	// sealed.
	Bytes []byte
}

// ContentType is the media type aggregates travel with.
const ContentType = "application/cose; cose-type=\"cose-sign1\""
