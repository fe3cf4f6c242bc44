package protocol

// TimeRequest is a device's question for the gateway's time, before its
// first ticket (a device without a real-time clock). It is MAC'd or
// signed with the device's ticket key, like a ticket, and sent where
// tickets go (the ticket topic, coaps://GATEWAY/t). The answer is a
// receipt with seq 0, status accepted, the gateway's time (key 11) and
// the request's nonce (key 12), MAC'd with the device's receipt key: the
// nonce binds the answer to this request, so an old answer replayed
// cannot set the device's clock back. Any nonce the device never used
// before will do: devicefw takes one of its seqs.
//
//	time-request-payload = {
//	  0: 11,                ; kind: time request
//	  1: device-id,
//	  2: bstr .size 8,      ; nonce, not all zero
//	}
type TimeRequest struct {
	Device string  `json:"device"`
	Nonce  [8]byte `json:"nonce"`
}

// Time request payload keys.
const (
	timeReqDevice = 1
	timeReqNonce  = 2
)

// Validate checks r against the rules of the wire format.
func (r *TimeRequest) Validate() error {
	if err := checkNameString(r.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if r.Nonce == ([8]byte{}) {
		return newError(ReasonFieldRange, "a time request's nonce is not all zero")
	}
	return nil
}

// AppendTimeRequest validates r, MACs or signs it with the device's
// ticket signer s and appends the tagged COSE message to dst.
func (e *Encoder) AppendTimeRequest(dst []byte, r *TimeRequest, s Signer) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return dst, err
	}
	p := appendHead(e.payload(), majorMap, 3)
	p = append(p, keyKind, byte(KindTimeRequest))
	p = appendUint(p, timeReqDevice)
	p = appendText(p, r.Device)
	p = appendUint(p, timeReqNonce)
	p = appendBytes(p, r.Nonce[:])
	return e.seal(dst, s, p, MaxTicketSize)
}

// ParseTimeRequest reads a time request: its envelope into env (whose MAC
// or signature the caller verifies with the device's key) and its
// payload into r. Anything not exactly as AppendTimeRequest writes it is
// refused.
func ParseTimeRequest(b []byte, env *Envelope, r *TimeRequest) error {
	*r = TimeRequest{}
	form := deviceForm{KindTimeRequest, 3, 1<<keyKind | 1<<timeReqDevice | 1<<timeReqNonce}
	err := readDeviceMessage(b, env, form, func(rd *reader, k int64) bool {
		switch k {
		case timeReqDevice:
			r.Device = string(rd.text(MaxDeviceIDLen, "device id"))
		case timeReqNonce:
			rd.fixed(r.Nonce[:], "nonce")
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
