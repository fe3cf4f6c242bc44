package strict

import "github.com/farthing-iot/farthing/protocol"

type aggregatePayload struct {
	Kind        uint8         `cbor:"0,keyasint"`
	Gateway     string        `cbor:"1,keyasint"`
	Seq         uint64        `cbor:"2,keyasint"`
	Provider    string        `cbor:"3,keyasint"`
	Account     string        `cbor:"4,keyasint"`
	Meter       string        `cbor:"5,keyasint"`
	WindowStart uint64        `cbor:"6,keyasint"`
	WindowEnd   uint64        `cbor:"7,keyasint"`
	Quantity    uint64        `cbor:"8,keyasint"`
	Amount      uint64        `cbor:"9,keyasint"`
	Currency    string        `cbor:"10,keyasint"`
	Tickets     uint64        `cbor:"11,keyasint"`
	MerkleRoot  []byte        `cbor:"12,keyasint"`
	Corrects    uint64        `cbor:"13,keyasint"`
	Epoch       uint64        `cbor:"14,keyasint"`
	Bands       []bandPayload `cbor:"15,keyasint"`
	Proven      uint64        `cbor:"16,keyasint"`
	Tariff      string        `cbor:"17,keyasint"`
}

type bandPayload struct {
	_        struct{} `cbor:",toarray"`
	Band     string
	Quantity uint64
	Amount   uint64
}

// DecodeAggregate decodes an untrusted aggregate. It does not verify the
// signature: check it with the gateway's public key through env.Verify.
func DecodeAggregate(b []byte) (protocol.Envelope, protocol.Aggregate, error) {
	var a protocol.Aggregate
	env, err := decodeEnvelope(b, protocol.MaxAggregateSize)
	if err != nil {
		return env, a, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, a, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "aggregates are signed with EdDSA"}
	}
	if err := peekKind(env.Payload, protocol.KindAggregate); err != nil {
		return env, a, err
	}
	var p aggregatePayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, a, refusal(err, "aggregate payload")
	}
	if err := checkKind(p.Kind, protocol.KindAggregate); err != nil {
		return env, a, err
	}
	a = protocol.Aggregate{Gateway: p.Gateway, Seq: p.Seq, Provider: p.Provider, Account: p.Account, Meter: p.Meter,
		WindowStart: p.WindowStart, WindowEnd: p.WindowEnd, Quantity: p.Quantity, Amount: p.Amount,
		Currency: p.Currency, Tickets: p.Tickets, MerkleRoot: p.MerkleRoot, Corrects: p.Corrects, Epoch: p.Epoch, Proven: p.Proven, Tariff: p.Tariff}
	if len(p.Bands) > protocol.MaxAggregateBands {
		return env, a, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "too many price bands"}
	}
	for _, b := range p.Bands {
		a.Bands = append(a.Bands, protocol.AggregateBand{Band: b.Band, Quantity: b.Quantity, Amount: b.Amount})
	}
	var buf [protocol.MaxAggregateSize]byte
	again, err := protocol.AppendAggregatePayload(buf[:0], &a)
	if err != nil {
		return env, a, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, a, err
	}
	return env, a, nil
}
