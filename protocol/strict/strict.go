// Package strict decodes Farthing messages from untrusted bytes on the
// gateway side, with github.com/fxamacker/cbor/v2 in its strictest settings.
//
// A message is accepted only if every one of these holds:
//   - it is no larger than its kind's limit (protocol.MaxTicketSize …);
//   - it is a tagged COSE_Sign1 (tag 18) or COSE_Mac0 (tag 17) with the
//     algorithm that goes with the tag, {alg, kid} protected and nothing
//     unprotected;
//   - no other tag appears, no length is indefinite, no map key repeats, no
//     map key is unknown, no array or map is longer than the format allows,
//     no text string is invalid UTF-8, nothing follows the message;
//   - every field is within the limits of package protocol;
//   - it is deterministically encoded: re-encoding the decoded message
//     gives back exactly the bytes received.
//
// The last rule makes the decoder agree byte for byte with the hand-written
// encoder of the device path; a differential fuzz test holds them to it.
// Every refusal is a *protocol.Error whose Reason goes into the receipt.
//
// This package is not compiled for devices: firmware uses the canonical
// reader in package protocol.
package strict

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"github.com/farthing-iot/farthing/protocol"
)

// decMode is the one set of decoding rules, fixed here and nowhere else.
var decMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  protocol.MaxReadings,
		MaxMapPairs:       17, // the largest map: an aggregate with every key, 0..16
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		BinaryUnmarshaler: cbor.BinaryUnmarshalerNone,
		TextUnmarshaler:   cbor.TextUnmarshalerNone,
	}.DecMode()
	if err != nil {
		panic("strict: decoding options: " + err.Error())
	}
	return dm
}()

// kindMode is decMode without the unknown-field error, for reading only
// the kind of a payload.
var kindMode = func() cbor.DecMode {
	opts := decMode.DecOptions()
	opts.ExtraReturnErrors = cbor.ExtraDecErrorNone
	dm, err := opts.DecMode()
	if err != nil {
		panic("strict: decoding options: " + err.Error())
	}
	return dm
}()

// envelope is the array inside the COSE tag.
type envelope struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected cbor.RawMessage
	Payload     []byte
	Signature   []byte
}

type protectedHeader struct {
	Alg   *int64 `cbor:"1,keyasint"`
	KeyID []byte `cbor:"4,keyasint"`
}

// decodeEnvelope checks the size, strips the COSE tag and decodes the
// envelope and its protected header.
func decodeEnvelope(b []byte, max int) (protocol.Envelope, error) {
	var env protocol.Envelope
	if len(b) > max {
		return env, &protocol.Error{Reason: protocol.ReasonTooLarge, Detail: "message is larger than its limit"}
	}
	if len(b) == 0 {
		return env, &protocol.Error{Reason: protocol.ReasonMalformed, Detail: "empty message"}
	}
	var tag uint64
	switch b[0] {
	case 0xc0 | byte(protocol.TagSign1):
		tag = protocol.TagSign1
	case 0xc0 | byte(protocol.TagMac0):
		tag = protocol.TagMac0
	default:
		return env, &protocol.Error{Reason: protocol.ReasonUnexpectedTag, Detail: "not a tagged COSE_Sign1 or COSE_Mac0"}
	}
	var raw envelope
	if err := decMode.Unmarshal(b[1:], &raw); err != nil {
		return env, refusal(err, "COSE message")
	}
	if raw.Protected == nil || raw.Payload == nil || raw.Signature == nil {
		return env, &protocol.Error{Reason: protocol.ReasonMalformed, Detail: "COSE message has a null field"}
	}
	if !bytes.Equal(raw.Unprotected, []byte{0xa0}) {
		return env, &protocol.Error{Reason: protocol.ReasonBadHeader, Detail: "unprotected header is not an empty map"}
	}
	var ph protectedHeader
	if err := decMode.Unmarshal(raw.Protected, &ph); err != nil {
		e := refusal(err, "protected header")
		if protocol.ReasonOf(e) == protocol.ReasonUnknownField {
			e.Reason = protocol.ReasonBadHeader
		}
		return env, e
	}
	if ph.Alg == nil || len(ph.KeyID) == 0 {
		return env, &protocol.Error{Reason: protocol.ReasonBadHeader, Detail: "protected header lacks alg or kid"}
	}
	if len(ph.KeyID) > protocol.MaxKeyIDLen {
		return env, &protocol.Error{Reason: protocol.ReasonStringTooLong, Detail: "kid is too long"}
	}
	alg := protocol.Algorithm(*ph.Alg)
	switch alg.Tag() {
	case 0:
		return env, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "algorithm " + alg.String() + " is not supported"}
	case tag:
	default:
		return env, &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: alg.String() + " does not go with this COSE message tag"}
	}
	if len(raw.Signature) != alg.SignatureSize() {
		return env, &protocol.Error{Reason: protocol.ReasonBadSignature, Detail: "signature has the wrong length"}
	}
	env = protocol.Envelope{Alg: alg, KeyID: ph.KeyID, Protected: raw.Protected, Payload: raw.Payload, Signature: raw.Signature}
	return env, nil
}

// checkCanonical re-encodes the decoded envelope around payload (which the
// caller re-encoded from its decoded fields) and compares with the input.
func checkCanonical(b []byte, env *protocol.Envelope, payload []byte) error {
	if !bytes.Equal(payload, env.Payload) {
		return &protocol.Error{Reason: protocol.ReasonNonCanonical, Detail: "payload is not deterministically encoded"}
	}
	var buf [protocol.MaxMessageSize + 64]byte
	if !bytes.Equal(protocol.AppendProtected(buf[:0], env.Alg, env.KeyID), env.Protected) {
		return &protocol.Error{Reason: protocol.ReasonNonCanonical, Detail: "protected header is not deterministically encoded"}
	}
	if !bytes.Equal(protocol.AppendEnvelope(buf[:0], env), b) {
		return &protocol.Error{Reason: protocol.ReasonNonCanonical, Detail: "COSE message is not deterministically encoded"}
	}
	return nil
}

// peekKind refuses a payload that is canonically another kind of message
// with ReasonWrongKind before its fields are decoded, so the reason names
// the real problem. Anything else is left to the full decode.
func peekKind(payload []byte, want protocol.Kind) error {
	if len(payload) >= 3 && payload[0] >= 0xa1 && payload[0] <= 0xb7 && payload[1] == 0 &&
		payload[2] >= 1 && payload[2] <= 3 && protocol.Kind(payload[2]) != want {
		return &protocol.Error{Reason: protocol.ReasonWrongKind, Detail: "a " + protocol.Kind(payload[2]).String() + ", not a " + want.String()}
	}
	return nil
}

func checkKind(k uint8, want protocol.Kind) error {
	if protocol.Kind(k) != want {
		if k == 0 {
			return &protocol.Error{Reason: protocol.ReasonMissingField, Detail: "message kind (key 0) is missing"}
		}
		return &protocol.Error{Reason: protocol.ReasonWrongKind, Detail: "not a " + want.String()}
	}
	return nil
}

// refusal maps a decoding error to a protocol error with a reason.
func refusal(err error, what string) *protocol.Error {
	reason := protocol.ReasonMalformed
	var (
		dup     *cbor.DupMapKeyError
		unknown *cbor.UnknownFieldError
		tags    *cbor.TagsMdError
		indef   *cbor.IndefiniteLengthError
		arr     *cbor.MaxArrayElementsError
		mp      *cbor.MaxMapPairsError
		nest    *cbor.MaxNestedLevelError
	)
	switch {
	case errors.As(err, &dup):
		reason = protocol.ReasonNonCanonical
	case errors.As(err, &unknown):
		reason = protocol.ReasonUnknownField
	case errors.As(err, &tags):
		reason = protocol.ReasonUnexpectedTag
	case errors.As(err, &indef):
		reason = protocol.ReasonNonCanonical
	case errors.As(err, &arr):
		reason = protocol.ReasonTooManyReadings
	case errors.As(err, &mp), errors.As(err, &nest):
		reason = protocol.ReasonMalformed
	}
	return &protocol.Error{Reason: reason, Detail: what, Err: err}
}

var diagMode = func() cbor.DiagMode {
	dm, err := cbor.DiagOptions{ByteStringEmbeddedCBOR: true, CBORSequence: true, MaxNestedLevels: 16}.DiagMode()
	if err != nil {
		panic("strict: diagnostic options: " + err.Error())
	}
	return dm
}()

// Diagnose returns the CBOR diagnostic notation (RFC 8949 section 8) of b,
// with the protected header and payload shown as embedded CBOR (<<…>>).
// It only needs b to be well-formed CBOR, not a valid message; bytes after
// the first item are shown as a CBOR sequence.
//
// A tagged COSE message (a four-element array) shows its protected header
// and payload as the CBOR they hold, and its unprotected header and
// signature as they are: a signature's bytes that happen to be
// well-formed CBOR are not shown as if they were.
func Diagnose(b []byte) (string, error) {
	var tag cbor.RawTag
	var parts []cbor.RawMessage
	if cbor.Unmarshal(b, &tag) == nil && cbor.Unmarshal(tag.Content, &parts) == nil && len(parts) == 4 {
		out := make([]string, 4)
		for i, p := range parts {
			dm := diagMode
			if i%2 == 1 {
				dm = plainDiagMode
			}
			d, err := dm.Diagnose(p)
			if err != nil {
				return diagMode.Diagnose(b)
			}
			out[i] = d
		}
		return fmt.Sprintf("%d([%s])", tag.Number, strings.Join(out, ", ")), nil
	}
	return diagMode.Diagnose(b)
}

var plainDiagMode = func() cbor.DiagMode {
	dm, err := cbor.DiagOptions{MaxNestedLevels: 16}.DiagMode()
	if err != nil {
		panic("strict: diagnostic options: " + err.Error())
	}
	return dm
}()
