package strict

import "github.com/farthing-iot/farthing/protocol"

type holdPayload struct {
	Kind     uint8              `cbor:"0,keyasint"`
	Gateway  string             `cbor:"1,keyasint"`
	Seq      uint64             `cbor:"2,keyasint"`
	Device   string             `cbor:"3,keyasint"`
	Ticket   uint64             `cbor:"4,keyasint"`
	Account  string             `cbor:"5,keyasint"`
	Provider string             `cbor:"6,keyasint"`
	Action   string             `cbor:"7,keyasint"`
	Rule     uint16             `cbor:"8,keyasint"`
	Usage    []holdUsagePayload `cbor:"9,keyasint"`
	Amount   uint64             `cbor:"10,keyasint"`
	Currency string             `cbor:"11,keyasint"`
	Time     uint64             `cbor:"12,keyasint"`
	Note     string             `cbor:"13,keyasint"`
	Epoch    uint64             `cbor:"14,keyasint"`
}

type holdUsagePayload struct {
	_        struct{} `cbor:",toarray"`
	Meter    string
	Quantity uint64
}

// DecodeHold decodes an untrusted hold record. It does not verify the
// signature: check it with the gateway's public key through env.Verify.
func DecodeHold(b []byte) (protocol.Envelope, protocol.Hold, error) {
	var h protocol.Hold
	env, err := decodeEnvelope(b, protocol.MaxHoldSize)
	if err != nil {
		return env, h, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, h, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "hold records are signed with EdDSA"}
	}
	if err := peekKind(env.Payload, protocol.KindHold); err != nil {
		return env, h, err
	}
	var p holdPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, h, refusal(err, "hold payload")
	}
	if err := checkKind(p.Kind, protocol.KindHold); err != nil {
		return env, h, err
	}
	if len(p.Usage) > protocol.MaxReadings {
		return env, h, &protocol.Error{Reason: protocol.ReasonTooManyReadings, Detail: "a hold lists 1..16 meters"}
	}
	h = protocol.Hold{Gateway: p.Gateway, Seq: p.Seq, Device: p.Device, Ticket: p.Ticket, Account: p.Account,
		Provider: p.Provider, Action: p.Action, Rule: protocol.Reason(p.Rule), Amount: p.Amount, Currency: p.Currency,
		Time: p.Time, Note: p.Note, Epoch: p.Epoch}
	for _, u := range p.Usage {
		h.Usage = append(h.Usage, protocol.HoldReading{Meter: u.Meter, Quantity: u.Quantity})
	}
	var buf [protocol.MaxHoldSize]byte
	again, err := protocol.AppendHoldPayload(buf[:0], &h)
	if err != nil {
		return env, h, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, h, err
	}
	return env, h, nil
}
