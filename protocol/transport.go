package protocol

// Transport names: the MQTT topic layout, the CoAP resource and the CoAP
// Content-Formats, defined here once for the gateway, the device adapters
// and the simulator. The HKDF labels of the keys a device derives from its
// master secret are the KeyPurpose constants in keys.go.
//
//	PREFIX/DEVICE/ticket       a device publishes its tickets (QoS 1)
//	PREFIX/DEVICE/receipt      the gateway publishes that device's receipts
//	PREFIX/aggregates/PROVIDER/GATEWAY
//	                           an MQTT upstream publishes aggregates (see
//	                           the gateway's mqttsink)
//	PREFIX/DEVICE/voucher      a device passes on a voucher (a keypad, a kiosk);
//	                           the answer is a receipt with the voucher's id
//	coaps://GATEWAY/t          a device POSTs a ticket; the response is the receipt
//	coaps://GATEWAY/v          a device POSTs a voucher; the response is the receipt
//
// An MQTT device's user name and client id are its device id.

// DefaultTopicPrefix is the topic prefix unless configured otherwise.
const DefaultTopicPrefix = "farthing/v1"

// CoAPTicketPath is the CoAP resource tickets are POSTed to ("/t").
const CoAPTicketPath = "t"

// CoAPVoucherPath is the CoAP resource vouchers are POSTed to ("/v").
const CoAPVoucherPath = "v"

// CoAP Content-Formats of the messages (IANA CoAP Content-Formats).
const (
	ContentFormatMac0  uint16 = 17 // application/cose; cose-type="cose-mac0"
	ContentFormatSign1 uint16 = 18 // application/cose; cose-type="cose-sign1"
	ContentFormatCBOR  uint16 = 60 // application/cbor: a payword ticket
)

// ContentFormatOf returns the CoAP Content-Format of a message: for a
// COSE message from its tag (ContentFormatSign1 for a COSE_Sign1, else
// ContentFormatMac0), ContentFormatCBOR for a payword ticket.
func ContentFormatOf(msg []byte) uint16 {
	switch {
	case IsPaywordTicket(msg):
		return ContentFormatCBOR
	case len(msg) > 0 && msg[0] == 0xc0|byte(TagSign1):
		return ContentFormatSign1
	}
	return ContentFormatMac0
}

// Topics builds and parses topic names under one prefix; the zero value
// uses DefaultTopicPrefix.
type Topics struct{ Prefix string }

func (t Topics) prefix() string {
	if t.Prefix == "" {
		return DefaultTopicPrefix
	}
	return t.Prefix
}

// Ticket is the topic a device publishes tickets on.
func (t Topics) Ticket(device string) string { return t.prefix() + "/" + device + "/ticket" }

// Receipt is the topic a device reads receipts on.
func (t Topics) Receipt(device string) string { return t.prefix() + "/" + device + "/receipt" }

// Voucher is the topic a device passes vouchers on.
func (t Topics) Voucher(device string) string { return t.prefix() + "/" + device + "/voucher" }

// TicketFilter subscribes to every device's tickets.
func (t Topics) TicketFilter() string { return t.prefix() + "/+/ticket" }

// VoucherFilter subscribes to every device's vouchers.
func (t Topics) VoucherFilter() string { return t.prefix() + "/+/voucher" }

// DeviceOfVoucher returns the device of a voucher topic, or "" if topic is
// not one.
func (t Topics) DeviceOfVoucher(topic string) string { return t.deviceOf(topic, "/voucher") }

// Aggregates is the prefix of the topics aggregates are published under.
func (t Topics) Aggregates() string { return t.prefix() + "/aggregates" }

// AggregateFilter subscribes to every aggregate.
func (t Topics) AggregateFilter() string { return t.Aggregates() + "/#" }

// DeviceOf returns the device of a ticket topic, or "" if topic is not one.
// (No strings package: the device path keeps to a short import list.)
func (t Topics) DeviceOf(topic string) string { return t.deviceOf(topic, "/ticket") }

func (t Topics) deviceOf(topic, s string) string {
	p := t.prefix() + "/"
	if len(topic) <= len(p)+len(s) || topic[:len(p)] != p || topic[len(topic)-len(s):] != s {
		return ""
	}
	dev := topic[len(p) : len(topic)-len(s)]
	if !ValidName(dev, MaxDeviceIDLen) {
		return ""
	}
	return dev
}

// CommandTarget names one sequence of control commands: a gateway's own,
// or a fleet group's.
//
//	SUBJECT_PREFIX.gw.GATEWAY      JetStream subject of a gateway's commands
//	SUBJECT_PREFIX.group.GROUP     and of a group's (default prefix farthing.commands)
//	PREFIX/commands/gw/GATEWAY     MQTT topic of a gateway's commands (QoS 1)
//	PREFIX/commands/group/GROUP    and of a group's
//	GET …/farthing/commands?gateway=GATEWAY&group=GROUP&after=KEY:SEQ&wait=SECONDS
//	                               HTTP long poll: the commands after each
//	                               target's seq, as a CBOR array of byte strings
type CommandTarget struct {
	Name  string
	Group bool
}

// DefaultCommandSubjectPrefix is the JetStream subject prefix of commands.
const DefaultCommandSubjectPrefix = "farthing.commands"

// DefaultCommandStream is the JetStream stream commands are kept in.
const DefaultCommandStream = "FARTHING_COMMANDS"

// CommandsPath is the HTTP path a receiver serves commands on.
const CommandsPath = "/farthing/commands"

// Key is the target's name in the HTTP poll and the books: "gw/NAME" or
// "group/NAME".
func (t CommandTarget) Key() string {
	if t.Group {
		return "group/" + t.Name
	}
	return "gw/" + t.Name
}

// Subject is the JetStream subject of the target's commands under prefix
// ("" for the default).
func (t CommandTarget) Subject(prefix string) string {
	if prefix == "" {
		prefix = DefaultCommandSubjectPrefix
	}
	if t.Group {
		return prefix + ".group." + t.Name
	}
	return prefix + ".gw." + t.Name
}

// Commands is the MQTT topic of a target's commands.
func (t Topics) Commands(target CommandTarget) string {
	return t.prefix() + "/commands/" + target.Key()
}

// TargetOf is a command's target.
func (c *Command) TargetOf() CommandTarget { return CommandTarget{Name: c.Target, Group: c.Group} }
