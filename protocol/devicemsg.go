package protocol

// deviceForm is the shape of a device message's payload that
// readDeviceMessage checks: its kind (key 0), at most keys keys, and the
// keys it requires (a mask of 1<<key).
type deviceForm struct {
	kind     Kind
	keys     int
	required int
}

// readDeviceMessage parses a device message's envelope into env and
// reads its payload's fields in key order: key 0 must be form's kind,
// field reads the value of any other key (false: a key it does not
// know), and the keys form requires must be there. The grant request,
// the release and the time request are read through it.
func readDeviceMessage(b []byte, env *Envelope, form deviceForm, field func(rd *reader, k int64) bool) error {
	what := form.kind.String()
	if len(b) > MaxTicketSize {
		return newError(ReasonTooLarge, what+" is larger than its limit")
	}
	if err := ParseEnvelope(b, env); err != nil {
		return err
	}
	rd := &reader{b: env.Payload}
	keys := rd.mapOf(form.keys, what+" payload")
	seen := 0
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		if k == keyKind {
			rd.kind(form.kind)
		} else if !field(rd, k) {
			rd.fail(ReasonUnknownField, "unknown "+what+" field")
		}
		seen |= 1 << k
	}
	rd.done()
	if rd.err != nil {
		return rd.err
	}
	if seen&form.required != form.required {
		return newError(ReasonMissingField, what+" lacks a field")
	}
	return nil
}
