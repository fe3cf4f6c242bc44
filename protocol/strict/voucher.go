package strict

import "github.com/farthing-iot/farthing/protocol"

type voucherPayload struct {
	Kind     uint8  `cbor:"0,keyasint"`
	ID       string `cbor:"1,keyasint"`
	Account  string `cbor:"2,keyasint"`
	Amount   uint64 `cbor:"3,keyasint"`
	Currency string `cbor:"4,keyasint"`
	Expiry   uint64 `cbor:"5,keyasint"`
	Issuer   string `cbor:"6,keyasint"`
	Gateway  string `cbor:"7,keyasint"`
	Device   string `cbor:"8,keyasint"`
}

// DecodeVoucher decodes an untrusted voucher. It does not verify the
// signature: check it with a trusted issuer's key through env.Verify.
func DecodeVoucher(b []byte) (protocol.Envelope, protocol.Voucher, error) {
	var v protocol.Voucher
	env, err := decodeEnvelope(b, protocol.MaxVoucherSize)
	if err != nil {
		return env, v, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, v, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "vouchers are signed with EdDSA"}
	}
	if err := peekKind(env.Payload, protocol.KindVoucher); err != nil {
		return env, v, err
	}
	var p voucherPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, v, refusal(err, "voucher payload")
	}
	if err := checkKind(p.Kind, protocol.KindVoucher); err != nil {
		return env, v, err
	}
	v = protocol.Voucher{ID: p.ID, Account: p.Account, Amount: p.Amount, Currency: p.Currency, Expiry: p.Expiry, Issuer: p.Issuer,
		Gateway: p.Gateway, Device: p.Device}
	var buf [protocol.MaxVoucherSize]byte
	again, err := protocol.AppendVoucherPayload(buf[:0], &v)
	if err != nil {
		return env, v, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, v, err
	}
	return env, v, nil
}
