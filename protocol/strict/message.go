package strict

import "github.com/farthing-iot/farthing/protocol"

// Message is any decoded Farthing message; exactly one of Ticket, Receipt,
// Aggregate, Voucher, Credit, Hold, Progress, Restore, GrantRequest and
// Release is set, as Kind says.
type Message struct {
	Kind      protocol.Kind
	Envelope  protocol.Envelope
	Ticket    *protocol.Ticket
	Receipt   *protocol.Receipt
	Aggregate *protocol.Aggregate
	Voucher   *protocol.Voucher
	Credit    *protocol.Credit
	Hold      *protocol.Hold
	Progress  *protocol.ChainProgress
	Restore   *protocol.Restore
	// A device's grant request or release.
	GrantRequest *protocol.GrantRequest
	Release      *protocol.Release
	// A provider's command, and a gateway's acknowledgement of one.
	Command    *protocol.Command
	CommandAck *protocol.CommandAck
}

// Decode decodes an untrusted message of any kind. The kind is read from
// the payload's key 0 and the message is then decoded as strictly as by
// the function for its kind.
func Decode(b []byte) (*Message, error) {
	env, err := decodeEnvelope(b, protocol.MaxCommandSize) // the largest; each kind's decoder holds it to its own limit
	if err != nil {
		return nil, err
	}
	var peek struct {
		Kind uint8 `cbor:"0,keyasint"`
	}
	// The payload is decoded fully below; here only its kind matters, so
	// unknown fields are not yet an error.
	if err := kindMode.Unmarshal(env.Payload, &peek); err != nil {
		return nil, refusal(err, "payload")
	}
	m := &Message{Kind: protocol.Kind(peek.Kind)}
	switch m.Kind {
	case protocol.KindTicket:
		env, t, err := DecodeTicket(b)
		m.Envelope, m.Ticket = env, &t
		return m, err
	case protocol.KindReceipt:
		env, r, err := DecodeReceipt(b)
		m.Envelope, m.Receipt = env, &r
		return m, err
	case protocol.KindAggregate:
		env, a, err := DecodeAggregate(b)
		m.Envelope, m.Aggregate = env, &a
		return m, err
	case protocol.KindVoucher:
		env, v, err := DecodeVoucher(b)
		m.Envelope, m.Voucher = env, &v
		return m, err
	case protocol.KindCredit:
		env, c, err := DecodeCredit(b)
		m.Envelope, m.Credit = env, &c
		return m, err
	case protocol.KindHold:
		env, h, err := DecodeHold(b)
		m.Envelope, m.Hold = env, &h
		return m, err
	case protocol.KindRestore:
		env, r, err := DecodeRestore(b)
		m.Envelope, m.Restore = env, &r
		return m, err
	case protocol.KindChainProgress:
		// Read by protocol's canonical reader, which refuses anything
		// not in its one deterministic encoding, as this package does.
		var p protocol.ChainProgress
		err := protocol.ParseChainProgress(b, &m.Envelope, &p)
		m.Progress = &p
		return m, err
	case protocol.KindCommand:
		env, c, err := DecodeCommand(b)
		m.Envelope, m.Command = env, &c
		return m, err
	case protocol.KindCommandAck:
		env, a, err := DecodeCommandAck(b)
		m.Envelope, m.CommandAck = env, &a
		return m, err
	case protocol.KindGrantRequest:
		var r protocol.GrantRequest
		err := protocol.ParseGrantRequest(b, &m.Envelope, &r)
		m.GrantRequest = &r
		return m, err
	case protocol.KindRelease:
		var r protocol.Release
		err := protocol.ParseRelease(b, &m.Envelope, &r)
		m.Release = &r
		return m, err
	}
	return nil, &protocol.Error{Reason: protocol.ReasonWrongKind, Detail: "payload kind is missing or unknown"}
}
