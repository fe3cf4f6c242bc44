package protocol

import "errors"

// Error is a refusal of a message, with the reason code the receipt will
// carry and a detail for logs. Details never contain key material.
type Error struct {
	Reason Reason
	Detail string
	Err    error // underlying cause, if any
}

func (e *Error) Error() string {
	s := "protocol: " + e.Reason.String()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrX) true for an *Error with the reason of the
// sentinel ErrX.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Detail == "" && t.Err == nil && t.Reason == e.Reason
}

// ReasonOf returns the reason carried by err, ReasonMalformed for any other
// non-nil error, and ReasonNone for nil.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonMalformed
}

func newError(r Reason, detail string) error { return &Error{Reason: r, Detail: keepDetail(detail)} }

// Sentinels for errors.Is; each matches any *Error with the same reason.
var (
	ErrMalformed      = &Error{Reason: ReasonMalformed}
	ErrTooLarge       = &Error{Reason: ReasonTooLarge}
	ErrNonCanonical   = &Error{Reason: ReasonNonCanonical}
	ErrUnsupportedAlg = &Error{Reason: ReasonUnsupportedAlg}
	ErrBadSignature   = &Error{Reason: ReasonBadSignature}
	ErrWrongKind      = &Error{Reason: ReasonWrongKind}
	ErrDeviceMismatch = &Error{Reason: ReasonDeviceMismatch}
	ErrBufferTooSmall = errors.New("protocol: buffer too small")
	ErrKeySize        = errors.New("protocol: wrong key size")
)
