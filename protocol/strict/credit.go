package strict

import "github.com/farthing-iot/farthing/protocol"

type creditPayload struct {
	Kind     uint8  `cbor:"0,keyasint"`
	Gateway  string `cbor:"1,keyasint"`
	Seq      uint64 `cbor:"2,keyasint"`
	Account  string `cbor:"3,keyasint"`
	Amount   uint64 `cbor:"4,keyasint"`
	Currency string `cbor:"5,keyasint"`
	Time     uint64 `cbor:"6,keyasint"`
	Credit   string `cbor:"7,keyasint"`
	Ref      string `cbor:"8,keyasint"`
	Debit    uint8  `cbor:"9,keyasint"`
	Reason   string `cbor:"10,keyasint"`
	Voucher  string `cbor:"11,keyasint"`
	Epoch    uint64 `cbor:"14,keyasint"`
}

// DecodeCredit decodes an untrusted credit record. It does not verify the
// signature: check it with the gateway's public key through env.Verify.
func DecodeCredit(b []byte) (protocol.Envelope, protocol.Credit, error) {
	var c protocol.Credit
	env, err := decodeEnvelope(b, protocol.MaxAggregateSize)
	if err != nil {
		return env, c, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, c, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "credits are signed with EdDSA"}
	}
	if err := peekKind(env.Payload, protocol.KindCredit); err != nil {
		return env, c, err
	}
	var p creditPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, c, refusal(err, "credit payload")
	}
	if err := checkKind(p.Kind, protocol.KindCredit); err != nil {
		return env, c, err
	}
	if p.Debit > 1 {
		return env, c, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "credit key 9 is 1 or absent"}
	}
	c = protocol.Credit{Gateway: p.Gateway, Seq: p.Seq, Account: p.Account, Amount: p.Amount, Currency: p.Currency,
		Time: p.Time, Kind: p.Credit, Ref: p.Ref, Debit: p.Debit == 1, Reason: p.Reason, Voucher: p.Voucher, Epoch: p.Epoch}
	var buf [protocol.MaxAggregateSize]byte
	again, err := protocol.AppendCreditPayload(buf[:0], &c)
	if err != nil {
		return env, c, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, c, err
	}
	return env, c, nil
}
