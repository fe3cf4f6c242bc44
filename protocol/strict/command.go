package strict

import (
	"github.com/fxamacker/cbor/v2"

	"github.com/farthing-iot/farthing/protocol"
)

// commandPayload is a command's payload: its header, then the fields of
// its action.
type commandPayload struct {
	commandHeader
	Tariffs   string      `cbor:"8,keyasint"`
	Effective uint64      `cbor:"9,keyasint"`
	Account   string      `cbor:"10,keyasint"`
	Amount    int64       `cbor:"11,keyasint"`
	Currency  string      `cbor:"12,keyasint"`
	Reason    string      `cbor:"13,keyasint"`
	Ref       string      `cbor:"14,keyasint"`
	Voucher   string      `cbor:"15,keyasint"`
	Vouchers  []string    `cbor:"16,keyasint"`
	KeyIDs    [][]byte    `cbor:"17,keyasint"`
	Device    string      `cbor:"18,keyasint"`
	PublicKey []byte      `cbor:"19,keyasint"`
	Provider  string      `cbor:"21,keyasint"`
	Meters    []meterTerm `cbor:"22,keyasint"`
}

type meterTerm struct {
	_      struct{} `cbor:",toarray"`
	Meter  string
	Tariff string
}

// DecodeCommand decodes an untrusted command. It does not verify the
// signature: check it with the provider's control key (env.Verify) before
// anything else.
func DecodeCommand(b []byte) (protocol.Envelope, protocol.Command, error) {
	var c protocol.Command
	env, err := decodeEnvelope(b, protocol.MaxCommandSize)
	if err != nil {
		return env, c, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, c, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "commands are signed with EdDSA"}
	}
	var p commandPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, c, refusal(err, "command payload")
	}
	if err := checkKind(p.Kind, protocol.KindCommand); err != nil {
		return env, c, err
	}
	if p.Group > 1 {
		return env, c, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "command key 2 is 1 or absent"}
	}
	c = p.command()
	c.Tariffs, c.Effective, c.Account, c.Amount, c.Currency = p.Tariffs, p.Effective, p.Account, p.Amount, p.Currency
	c.Reason, c.Ref, c.Voucher, c.Vouchers, c.KeyIDs = p.Reason, p.Ref, p.Voucher, p.Vouchers, p.KeyIDs
	c.Device, c.PublicKey, c.Provider = p.Device, p.PublicKey, p.Provider
	for _, m := range p.Meters {
		c.Meters = append(c.Meters, protocol.MeterTerms{Meter: m.Meter, Tariff: m.Tariff})
	}
	again, err := protocol.AppendCommandPayload(nil, &c)
	if err != nil {
		return env, c, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, c, err
	}
	return env, c, nil
}

// commandHeader is what every command has, whatever its action.
type commandHeader struct {
	Kind      uint8  `cbor:"0,keyasint"`
	Target    string `cbor:"1,keyasint"`
	Group     uint8  `cbor:"2,keyasint"`
	Seq       uint64 `cbor:"3,keyasint"`
	ID        string `cbor:"4,keyasint"`
	NotBefore uint64 `cbor:"5,keyasint"`
	Expiry    uint64 `cbor:"6,keyasint"`
	Action    string `cbor:"7,keyasint"`
}

// command is the header as a command's fields.
func (h commandHeader) command() protocol.Command {
	return protocol.Command{Target: h.Target, Group: h.Group == 1, Seq: h.Seq, ID: h.ID, NotBefore: h.NotBefore, Expiry: h.Expiry, Action: h.Action}
}

// DecodeCommandHeader reads only the header of a command DecodeCommand
// refuses — its target, seq, id, validity and action, the other fields
// left unread — so that a gateway can answer one it cannot apply (an
// action of a newer provider) in its sequence instead of waiting for it
// forever. The signature is not verified; the header's fields are
// checked as a command's.
func DecodeCommandHeader(b []byte) (protocol.Envelope, protocol.Command, error) {
	var c protocol.Command
	env, err := decodeEnvelope(b, protocol.MaxCommandSize)
	if err != nil {
		return env, c, err
	}
	var h commandHeader
	if err := cbor.Unmarshal(env.Payload, &h); err != nil {
		return env, c, refusal(err, "command header")
	}
	if err := checkKind(h.Kind, protocol.KindCommand); err != nil {
		return env, c, err
	}
	c = h.command()
	if !protocol.ValidName(h.Target, protocol.MaxDeviceIDLen) || !protocol.ValidName(h.ID, protocol.MaxDeviceIDLen) || h.Group > 1 ||
		h.Seq == 0 || h.Seq > protocol.MaxSeq || !protocol.ValidName(h.Action, protocol.MaxReasonLen) {
		return env, c, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "not a command's header"}
	}
	return env, c, nil
}

type commandAckPayload struct {
	Kind    uint8  `cbor:"0,keyasint"`
	Gateway string `cbor:"1,keyasint"`
	Seq     uint64 `cbor:"2,keyasint"`
	Command string `cbor:"3,keyasint"`
	Target  string `cbor:"4,keyasint"`
	Group   uint8  `cbor:"5,keyasint"`
	Number  uint64 `cbor:"6,keyasint"`
	Outcome *uint8 `cbor:"7,keyasint"`
	Reason  uint16 `cbor:"8,keyasint"`
	Time    uint64 `cbor:"9,keyasint"`
	Action  string `cbor:"10,keyasint"`
	Local   uint8  `cbor:"11,keyasint"`
	Epoch   uint64 `cbor:"14,keyasint"`
}

// DecodeCommandAck decodes an untrusted acknowledgement of a command. It
// does not verify the signature: check it with the gateway's key.
func DecodeCommandAck(b []byte) (protocol.Envelope, protocol.CommandAck, error) {
	var a protocol.CommandAck
	env, err := decodeEnvelope(b, protocol.MaxAggregateSize)
	if err != nil {
		return env, a, err
	}
	if env.Alg != protocol.AlgEdDSA {
		return env, a, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "acknowledgements are signed with EdDSA"}
	}
	var p commandAckPayload
	if err := decMode.Unmarshal(env.Payload, &p); err != nil {
		return env, a, refusal(err, "command acknowledgement payload")
	}
	if err := checkKind(p.Kind, protocol.KindCommandAck); err != nil {
		return env, a, err
	}
	if p.Outcome == nil || *p.Outcome > 1 || p.Group > 1 || p.Local > 1 {
		return env, a, &protocol.Error{Reason: protocol.ReasonFieldRange, Detail: "an acknowledgement's outcome is 0 or 1, its group and local flags 1 or absent"}
	}
	a = protocol.CommandAck{Gateway: p.Gateway, Seq: p.Seq, Command: p.Command, Target: p.Target, Group: p.Group == 1, Number: p.Number,
		Refused: *p.Outcome == 1, Reason: protocol.Reason(p.Reason), Time: p.Time, Action: p.Action, Local: p.Local == 1, Epoch: p.Epoch}
	var buf [protocol.MaxAggregateSize]byte
	again, err := protocol.AppendCommandAckPayload(buf[:0], &a)
	if err != nil {
		return env, a, err
	}
	if err := checkCanonical(b, &env, again); err != nil {
		return env, a, err
	}
	return env, a, nil
}
