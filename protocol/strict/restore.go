package strict

import "github.com/farthing-iot/farthing/protocol"

type restorePayload struct {
	Kind       uint8  `cbor:"0,keyasint"`
	Gateway    string `cbor:"1,keyasint"`
	Seq        uint64 `cbor:"2,keyasint"`
	OldEpoch   uint64 `cbor:"3,keyasint"`
	OldLastSeq uint64 `cbor:"4,keyasint"`
	Time       uint64 `cbor:"5,keyasint"`
	Epoch      uint64 `cbor:"14,keyasint"`
}

// DecodeRestore decodes an untrusted restore record. It does not verify
// the signature: check it with the gateway's public key through
// env.Verify.
func DecodeRestore(b []byte) (protocol.Envelope, protocol.Restore, error) {
	var r protocol.Restore
	env, err := decodeEnvelope(b, protocol.MaxAggregateSize)
	if err != nil {
		return env, r, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, r, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "restore records are signed with EdDSA"}
	}
	if err := peekKind(env.Payload, protocol.KindRestore); err != nil {
		return env, r, err
	}
	var p restorePayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, r, refusal(err, "restore payload")
	}
	if err := checkKind(p.Kind, protocol.KindRestore); err != nil {
		return env, r, err
	}
	r = protocol.Restore{Gateway: p.Gateway, Seq: p.Seq, OldEpoch: p.OldEpoch, OldLastSeq: p.OldLastSeq, Time: p.Time, Epoch: p.Epoch}
	var buf [protocol.MaxAggregateSize]byte
	again, err := protocol.AppendRestorePayload(buf[:0], &r)
	if err != nil {
		return env, r, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, r, err
	}
	return env, r, nil
}
