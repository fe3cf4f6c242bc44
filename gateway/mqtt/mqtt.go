// Package mqtt carries tickets and receipts over MQTT, in two modes that
// feed one handler: an embedded broker for devices inside the daemon (on
// mochi-mqtt's packet codec), the default, and a client (paho) of an
// external broker such as Mosquitto.
//
// Topics: devices publish tickets on PREFIX/DEVICE/ticket and read receipts
// on PREFIX/DEVICE/receipt. A ticket is acknowledged to the broker (PUBACK
// or the paho ack) only after its Reply returned, and a Reply returns only
// after the ticket is committed: an acknowledged ticket is durable. Both
// modes keep many of a device's tickets in flight at once, started in
// arrival order and answered in that order, so they share group commits.
package mqtt

import (
	"context"

	"github.com/farthing-iot/farthing/protocol"
)

// Handler takes one ticket that arrived on device's ticket topic. It
// checks the ticket and queues it for commit on the caller's goroutine, so
// a caller that hands over a device's tickets in arrival order has them
// committed in that order, and returns at once. The Reply it returns waits
// for the outcome.
type Handler func(ctx context.Context, device string, payload []byte) Reply

// Reply waits for a ticket's outcome and returns the receipt to publish
// (nil: publish nothing) and whether the ticket may be acknowledged to the
// broker: true once its effects are durable or it is refused for good,
// false when it should come again (retry later). It returns only after the
// ticket's effects are durable.
type Reply func() (receipt []byte, ack bool)

// Topics are the topic names (protocol.Topics).
type Topics = protocol.Topics

// Receipts go out at QoS 0 unless configured otherwise. A receipt is an
// answer the device can always get again: its ticket stays in the device's
// pending ring until the receipt arrives, and the device sends it again
// after a reconnect (the only way a QoS 0 message is lost on a live TCP
// session); the gateway answers a repeat "duplicate" with the original
// charge. QoS 1 would add a PUBACK from every device for every receipt,
// and broker state for each one in flight, for nothing the device lacks.

// MaxPacket bounds an MQTT packet: a ticket and the topic around it.
const MaxPacket = protocol.MaxTicketSize + 256
