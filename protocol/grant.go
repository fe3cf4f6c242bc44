package protocol

// Reservations: a device asks for a grant before it serves (a charger
// before it energises, a dispenser before it opens its valve), the
// gateway reserves the grant's price on the account, and the device
// serves up to the grant's limit, even while the gateway is out of reach.
// The model is 3GPP converged charging with unit reservation: a grant of
// units, a validity, an idle timeout, a threshold to ask again at and a
// final-unit action.
//
//	grant-request-payload = {  ; MAC'd or signed with the device's ticket key, sent where tickets go
//	  0: 12,                 ; kind: grant request
//	  1: id,                 ; device
//	  2: seq,                ; request id: above the device's last (devicefw takes one of its seqs)
//	  3: name,               ; meter
//	  4: uint,               ; the meter's register now
//	  ? 5: uint .gt 0,       ; register epoch
//	  ? 6: uint .gt 0,       ; units wanted   } exactly one
//	  ? 7: uint .gt 0,       ; amount wanted, nanos  }
//	}
//
//	release-payload = {       ; the device is done: the rest of the grant is released
//	  0: 13,                 ; kind: release
//	  1: id,                 ; device
//	  2: seq,                ; request id
//	  3: seq,                ; the grant's id
//	  4: uint,               ; the meter's register now: every ticket up to it was answered
//	  ? 5: uint .gt 0,       ; register epoch
//	}
//
// Both are answered by a receipt (receipt.go) whose seq is the request
// id: status 0 with the grant (receipt key 13), or a refusal (2 rejected,
// 3 insufficient funds, 4 retry later) without one.
//
//	grant = {
//	  1: seq,                ; grant id: the request id that opened it; tickets under it name it (ticket key 8)
//	  2: name,               ; meter
//	  3: uint,               ; limit: the device serves up to this register
//	  4: uint,               ; threshold: it asks again once its register reaches this (≤ limit)
//	  5: nanos,              ; still reserved for it
//	  6: ms,                 ; expiry, gateway clock: released at it
//	  7: uint,               ; validity left when answered, ms (a device without a clock counts it)
//	  8: uint .gt 0,         ; idle timeout, ms: released after this long without a ticket
//	  9: 0 / 1,              ; final-unit action: 0 stop at the limit; 1 go on to limit + grace
//	  ? 10: uint .gt 0,      ; grace, units past the limit (action 1 only)
//	  ? 11: 1..3,            ; closed: 1 released, 2 expired, 3 idle; nothing is reserved any more
//	  ? 12: uint .gt 0,      ; register epoch of limit and threshold
//	}
type GrantRequest struct {
	Device   string `json:"device"`
	Request  uint64 `json:"request"`
	Meter    string `json:"meter"`
	Register uint64 `json:"register"`
	Epoch    uint64 `json:"epoch,omitempty"`
	Units    uint64 `json:"units,omitempty"`  // units wanted; or
	Amount   uint64 `json:"amount,omitempty"` // nanos wanted
}

// Release is a device's end of a grant: what is still reserved is
// released. Register is the meter's register when the device stopped;
// the gateway answers retry later until it has charged the tickets up to
// it, so no usage under the grant comes after its reservation is gone.
type Release struct {
	Device   string `json:"device"`
	Request  uint64 `json:"request"`
	Grant    uint64 `json:"grant"`
	Register uint64 `json:"register"`
	Epoch    uint64 `json:"epoch,omitempty"`
}

// FinalAction is what a device does at its grant's limit when the
// gateway has not granted more.
type FinalAction uint8

// Final-unit actions.
const (
	// FinalStop: stop serving at the limit.
	FinalStop FinalAction = 0
	// FinalContinue: go on to the limit plus the grace, then stop.
	FinalContinue FinalAction = 1
)

// GrantClosed says why a grant ended.
type GrantClosed uint8

// Ends of a grant.
const (
	GrantOpen     GrantClosed = 0
	GrantReleased GrantClosed = 1 // the device released it
	GrantExpired  GrantClosed = 2 // its validity ended
	GrantIdle     GrantClosed = 3 // no ticket for its idle timeout
)

// String returns the end's name.
func (c GrantClosed) String() string {
	switch c {
	case GrantOpen:
		return "open"
	case GrantReleased:
		return "released"
	case GrantExpired:
		return "expired"
	case GrantIdle:
		return "idle"
	}
	return "closed_" + itoa(int64(c))
}

// Grant is what a device may serve (receipt key 13). ID is 0 when a
// receipt carries no grant.
type Grant struct {
	ID        uint64      `json:"id"`
	Meter     string      `json:"meter"`
	Limit     uint64      `json:"limit"`     // serve up to this register
	Threshold uint64      `json:"threshold"` // ask again from this register
	Reserved  uint64      `json:"reserved"`  // nanos still reserved
	Expiry    uint64      `json:"expiry_ms"` // gateway clock, Unix ms
	Validity  uint64      `json:"validity_ms"`
	Idle      uint64      `json:"idle_ms"`
	Final     FinalAction `json:"final"`
	Grace     uint64      `json:"grace,omitempty"`
	Closed    GrantClosed `json:"closed,omitempty"`
	Epoch     uint64      `json:"epoch,omitempty"`
}

// Grant request, release and grant keys.
const (
	grantReqDevice   = 1
	grantReqID       = 2
	grantReqMeter    = 3
	grantReqRegister = 4
	grantReqEpoch    = 5
	grantReqUnits    = 6
	grantReqAmount   = 7

	releaseDevice   = 1
	releaseID       = 2
	releaseGrant    = 3
	releaseRegister = 4
	releaseEpoch    = 5

	grantID        = 1
	grantMeter     = 2
	grantLimit     = 3
	grantThreshold = 4
	grantReserved  = 5
	grantExpiry    = 6
	grantValidity  = 7
	grantIdle      = 8
	grantFinal     = 9
	grantGrace     = 10
	grantClosed    = 11
	grantEpoch     = 12
)

// Validate checks r against the rules of the wire format.
func (r *GrantRequest) Validate() error {
	if err := checkNameString(r.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if err := checkNameString(r.Meter, MaxMeterNameLen, "meter name"); err != nil {
		return err
	}
	if r.Request == 0 || r.Request > MaxSeq {
		return newError(ReasonFieldRange, "a grant request's id is in 1..2^63-1")
	}
	if (r.Units == 0) == (r.Amount == 0) {
		return newError(ReasonFieldRange, "a grant request wants units or an amount, not both")
	}
	return nil
}

// Validate checks r against the rules of the wire format.
func (r *Release) Validate() error {
	if err := checkNameString(r.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if r.Request == 0 || r.Request > MaxSeq || r.Grant == 0 || r.Grant > MaxSeq {
		return newError(ReasonFieldRange, "a release's request and grant ids are in 1..2^63-1")
	}
	return nil
}

// Validate checks g against the rules of the wire format: an id, a
// meter, an expiry and an idle timeout; the threshold at or below the
// limit; a known final-unit action, with a grace only to go on; a known
// end, and a closed grant reserving nothing.
func (g *Grant) Validate() error {
	if err := checkNameString(g.Meter, MaxMeterNameLen, "meter name"); err != nil {
		return err
	}
	if g.ID == 0 || g.ID > MaxSeq || g.Expiry == 0 || g.Idle == 0 || g.Threshold > g.Limit || g.Final > FinalContinue ||
		g.Grace != 0 && g.Final != FinalContinue || g.Closed > GrantIdle || g.Closed != GrantOpen && g.Reserved != 0 {
		return newError(ReasonFieldRange, "grant out of range")
	}
	return nil
}

// AppendGrantRequest validates r, MACs or signs it with the device's
// ticket signer s and appends the tagged COSE message to dst.
func (e *Encoder) AppendGrantRequest(dst []byte, r *GrantRequest, s Signer) ([]byte, error) {
	p, err := appendGrantRequestPayload(e.payload(), r)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxTicketSize)
}

// appendGrantRequestPayload validates r and appends its payload.
func appendGrantRequestPayload(p []byte, r *GrantRequest) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return p, err
	}
	n := uint64(6)
	if r.Epoch != 0 {
		n++
	}
	p = appendHead(p, majorMap, n)
	p = append(p, keyKind, byte(KindGrantRequest))
	p = appendUint(p, grantReqDevice)
	p = appendText(p, r.Device)
	p = appendUint(p, grantReqID)
	p = appendUint(p, r.Request)
	p = appendUint(p, grantReqMeter)
	p = appendText(p, r.Meter)
	p = appendUint(p, grantReqRegister)
	p = appendUint(p, r.Register)
	p = appendOptUint(p, grantReqEpoch, r.Epoch)
	p = appendOptUint(p, grantReqUnits, r.Units)
	return appendOptUint(p, grantReqAmount, r.Amount), nil
}

// AppendRelease validates r, MACs or signs it with the device's ticket
// signer s and appends the tagged COSE message to dst.
func (e *Encoder) AppendRelease(dst []byte, r *Release, s Signer) ([]byte, error) {
	p, err := appendReleasePayload(e.payload(), r)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxTicketSize)
}

// appendReleasePayload validates r and appends its payload.
func appendReleasePayload(p []byte, r *Release) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return p, err
	}
	n := uint64(5)
	if r.Epoch != 0 {
		n++
	}
	p = appendHead(p, majorMap, n)
	p = append(p, keyKind, byte(KindRelease))
	p = appendUint(p, releaseDevice)
	p = appendText(p, r.Device)
	p = appendUint(p, releaseID)
	p = appendUint(p, r.Request)
	p = appendUint(p, releaseGrant)
	p = appendUint(p, r.Grant)
	p = appendUint(p, releaseRegister)
	p = appendUint(p, r.Register)
	return appendOptUint(p, releaseEpoch, r.Epoch), nil
}

// appendOptUint appends key and v unless v is 0 (a field left out).
func appendOptUint(p []byte, key, v uint64) []byte {
	if v == 0 {
		return p
	}
	return appendUint(appendUint(p, key), v)
}

// appendGrant appends g as the map of receipt key 13.
func appendGrant(p []byte, g *Grant) []byte {
	n := uint64(9)
	for _, present := range [...]bool{g.Grace != 0, g.Closed != 0, g.Epoch != 0} {
		if present {
			n++
		}
	}
	p = appendHead(p, majorMap, n)
	p = appendUint(appendUint(p, grantID), g.ID)
	p = appendText(appendUint(p, grantMeter), g.Meter)
	p = appendUint(appendUint(p, grantLimit), g.Limit)
	p = appendUint(appendUint(p, grantThreshold), g.Threshold)
	p = appendUint(appendUint(p, grantReserved), g.Reserved)
	p = appendUint(appendUint(p, grantExpiry), g.Expiry)
	p = appendUint(appendUint(p, grantValidity), g.Validity)
	p = appendUint(appendUint(p, grantIdle), g.Idle)
	p = appendUint(appendUint(p, grantFinal), uint64(g.Final))
	p = appendOptUint(p, grantGrace, g.Grace)
	p = appendOptUint(p, grantClosed, uint64(g.Closed))
	return appendOptUint(p, grantEpoch, g.Epoch)
}

// readFrom reads a grant from the start of b (Grant.read) and returns
// how many bytes it took. The reader is its own, so that a caller
// reaching it through a function value does not move its reader to the
// heap.
func (g *Grant) readFrom(b []byte) (int, error) {
	rd := reader{b: b}
	g.read(&rd)
	return rd.off, rd.err
}

// read reads the map of receipt key 13 into g (the ranges are checked by
// Validate). The meter is kept when g.Meter already holds it (no
// allocation on a device). Short on purpose: every device links it.
func (g *Grant) read(rd *reader) {
	keys := rd.mapOf(12, "grant")
	seen := 0
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		seen |= 1 << k
		if k == grantMeter {
			if p := rd.text(MaxMeterNameLen, "grant meter"); string(p) != g.Meter {
				g.Meter = string(p)
			}
			continue
		}
		v := rd.uint("grant")
		switch k {
		case grantID:
			g.ID = v
		case grantLimit:
			g.Limit = v
		case grantThreshold:
			g.Threshold = v
		case grantReserved:
			g.Reserved = v
		case grantExpiry:
			g.Expiry = v
		case grantValidity:
			g.Validity = v
		case grantIdle:
			g.Idle = v
		case grantFinal:
			g.Final = FinalAction(min(v, 255))
		case grantGrace:
			g.Grace = v
		case grantClosed:
			g.Closed = GrantClosed(min(v, 255))
		case grantEpoch:
			g.Epoch = v
		default:
			rd.fail(ReasonUnknownField, "grant")
		}
		if v == 0 && k >= grantGrace {
			rd.fail(ReasonNonCanonical, "grant")
		}
	}
	if seen&0x3fe != 0x3fe {
		rd.fail(ReasonMissingField, "grant")
	}
}

// ParseGrantRequest reads a grant request: its envelope into env (whose
// MAC or signature the caller verifies with the device's key) and its
// payload into r. Anything not exactly as AppendGrantRequest writes it is
// refused.
func ParseGrantRequest(b []byte, env *Envelope, r *GrantRequest) error {
	*r = GrantRequest{}
	err := readDeviceMessage(b, env, deviceForm{KindGrantRequest, 8, 0x1f}, func(rd *reader, k int64) bool {
		switch k {
		case grantReqDevice:
			r.Device = string(rd.text(MaxDeviceIDLen, "device id"))
		case grantReqMeter:
			r.Meter = string(rd.text(MaxMeterNameLen, "meter name"))
		case grantReqID:
			r.Request = rd.uint("request id")
		case grantReqRegister:
			r.Register = rd.uint("register")
		case grantReqEpoch:
			r.Epoch = rd.nonZero("epoch")
		case grantReqUnits:
			r.Units = rd.nonZero("units")
		case grantReqAmount:
			r.Amount = rd.nonZero("amount")
		default:
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	return r.Validate()
}

// ParseRelease reads a release as ParseGrantRequest reads a grant
// request.
func ParseRelease(b []byte, env *Envelope, r *Release) error {
	*r = Release{}
	err := readDeviceMessage(b, env, deviceForm{KindRelease, 8, 0x1f}, func(rd *reader, k int64) bool {
		switch k {
		case releaseDevice:
			r.Device = string(rd.text(MaxDeviceIDLen, "device id"))
		case releaseID:
			r.Request = rd.uint("request id")
		case releaseGrant:
			r.Grant = rd.uint("grant id")
		case releaseRegister:
			r.Register = rd.uint("register")
		case releaseEpoch:
			r.Epoch = rd.nonZero("epoch")
		default:
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	return r.Validate()
}

// kind reads a payload's kind and refuses another than want.
func (r *reader) kind(want Kind) {
	if r.uint("kind") != uint64(want) && r.err == nil {
		r.fail(ReasonWrongKind, "not a "+want.String())
	}
}

// nonZero reads an optional number, which is left out when 0.
func (r *reader) nonZero(what string) uint64 {
	v := r.uint(what)
	if v == 0 && r.err == nil {
		r.fail(ReasonNonCanonical, what+" of 0 is left out")
	}
	return v
}
