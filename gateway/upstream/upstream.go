// Package upstream holds what the gateway's forwarder and its sinks share:
// the aggregate on its way to a provider, and the provider's commands on
// their way down. Each sink (mqttsink, httpsink, jetstreamsink) is a small
// package that delivers Outgoing values and reports success only once the
// far side confirmed them, and follows the control channel's commands on
// the same kind of transport (Commands in each).
package upstream

import (
	"context"
	"errors"
)

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

// CommandHandler answers one command (a signed protocol.Command as it
// came): nil once the answer is durable, so the transport may acknowledge
// it; ErrNotYet for a command to bring again later; any other error for
// one to bring again soon.
type CommandHandler func(ctx context.Context, command []byte) error

// ErrNotYet: the command is not valid yet (its not-before is ahead).
var ErrNotYet = errors.New("control: the command is not valid yet")
