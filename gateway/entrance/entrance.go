// Package entrance is the one contract between the device transports
// (gateway/mqtt, gateway/coaps) and the gateway's pipeline: every message
// a device sends — a ticket, a payword, a chain commitment, a voucher — is
// handed over the same way, whatever carried it, and answered the same
// way.
//
// A transport calls the Handler on the goroutine that keeps a device's
// messages in arrival order; the Handler classifies and checks the
// message and queues it for its commit, then returns at once. The Reply
// it returns waits for the outcome. A transport that answers at once (a
// CoAP request) calls the Reply right away; one that keeps many messages
// in flight (MQTT) calls the Replies in order on another goroutine, so a
// device's messages share group commits.
package entrance

import (
	"context"
	"time"

	"github.com/farthing-iot/farthing/protocol"
)

// Message is what a device sent, as its transport received it.
type Message struct {
	// Device is the identity the transport authenticated: the device id
	// of the MQTT session or the DTLS identity. The message must be that
	// device's.
	Device string
	// Payload is the message's bytes, untrusted.
	Payload []byte
	// Transport names the transport ("mqtt", "coaps"), for metrics and logs.
	Transport string
}

// Answer is the outcome of one message.
type Answer struct {
	// Receipt is the receipt to send back, MAC'd with the device's receipt
	// key; nil when there is nobody to answer (no such device).
	Receipt []byte
	// Status is the receipt's status.
	Status protocol.Status
	// RetryAfter is how long a device told "retry later" should wait.
	RetryAfter time.Duration
}

// Final reports whether the message is done with: committed, or refused
// for good. A message that is not final (retry later) is not acknowledged
// to an MQTT broker, which then delivers it again.
func (a Answer) Final() bool { return a.Status != protocol.StatusRetryLater }

// Reply waits for a message's outcome. It returns only after an accepted
// message's effects are durable.
type Reply func() Answer

// Handler takes one message from an authenticated device; see the package
// documentation for when it returns and what its Reply does.
type Handler func(ctx context.Context, m Message) Reply
