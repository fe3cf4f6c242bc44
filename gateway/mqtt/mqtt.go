// Package mqtt carries tickets and receipts over MQTT, in two modes that
// feed one handler: an embedded broker for devices inside the daemon (on
// mochi-mqtt's packet codec), the default, and a client (paho) of an
// external broker such as Mosquitto.
//
// Topics: devices publish tickets on PREFIX/DEVICE/ticket (and vouchers on
// PREFIX/DEVICE/voucher) and read receipts on PREFIX/DEVICE/receipt. Every
// message goes to the gateway's one entrance (entrance.Handler), whatever
// its topic. A message is acknowledged to the broker (PUBACK or the paho
// ack) only after its Reply returned final, and a Reply returns only
// after the message is committed: an acknowledged message is durable. Both
// modes keep many of a device's tickets in flight at once, started in
// arrival order and answered in that order, so they share group commits.
package mqtt

import (
	"github.com/farthing-iot/farthing/protocol"
)

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
