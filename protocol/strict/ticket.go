package strict

import "github.com/farthing-iot/farthing/protocol"

type ticketPayload struct {
	Kind     uint8     `cbor:"0,keyasint"`
	Device   string    `cbor:"1,keyasint"`
	Seq      uint64    `cbor:"2,keyasint"`
	Time     uint64    `cbor:"3,keyasint"`
	Epoch    uint64    `cbor:"4,keyasint"`
	Readings []reading `cbor:"5,keyasint"`
	Account  string    `cbor:"6,keyasint"`
	Session  string    `cbor:"7,keyasint"`
	Grant    uint64    `cbor:"8,keyasint"`
}

type reading struct {
	_        struct{} `cbor:",toarray"`
	Meter    string
	Register uint64
}

// DecodeTicket decodes an untrusted ticket. It does not verify the
// signature: look the key up by env.KeyID and call env.Verify. The
// envelope's slices alias b; the ticket's strings are copies.
func DecodeTicket(b []byte) (protocol.Envelope, protocol.Ticket, error) {
	var t protocol.Ticket
	env, err := decodeEnvelope(b, protocol.MaxTicketSize)
	if err != nil {
		return env, t, err
	}
	if err := peekKind(env.Payload, protocol.KindTicket); err != nil {
		return env, t, err
	}
	var p ticketPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, t, refusal(err, "ticket payload")
	}
	if err := checkKind(p.Kind, protocol.KindTicket); err != nil {
		return env, t, err
	}
	t = protocol.Ticket{Device: p.Device, Seq: p.Seq, Time: p.Time, Epoch: p.Epoch, Account: p.Account, Session: p.Session, Grant: p.Grant}
	if p.Readings != nil {
		t.Readings = make([]protocol.Reading, len(p.Readings))
		for i, r := range p.Readings {
			t.Readings[i] = protocol.Reading{Meter: r.Meter, Register: r.Register}
		}
	}
	var buf [protocol.MaxTicketSize]byte
	again, err := protocol.AppendTicketPayload(buf[:0], &t)
	if err != nil {
		return env, t, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, t, err
	}
	return env, t, nil
}
