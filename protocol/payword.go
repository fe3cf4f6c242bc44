package protocol

// PayWord (Rivest and Shamir, 1996): hash-chain tickets for the cheapest
// devices. A device picks a random seed, hashes it n times down to the
// chain's anchor w0 = H^n(seed), and commits to the anchor once, in a
// signed chain commitment. Each step it then reveals, w_i = H^(n-i)(seed),
// is one unit of usage more: a payword ticket (chain, i, w_i) says that
// the meter's register stands at start + i × units. Anyone holding the
// commitment checks a payword with i − j hashes, H^(i−j)(w_i) = w_j,
// against the last one accepted (or the anchor): no secret, one SHA-256
// per step, and a provider can check the usage without trusting the
// gateway.
//
// The hash of one step is separated from every other use of SHA-256 and
// bound to its chain: H(w) = SHA-256("FPW1" || chain id || w), 44 bytes,
// one compression.
//
// The commitment and the payword ticket are specified, in CDDL, with the
// other messages in doc.go.
//
// A payword ticket is dated by the gateway's clock when it arrives (the
// device's clock is not part of it, since nothing signs it), and priced as
// a reading of the commitment's meter. A chain is renewed before it runs
// out by committing the next one (chain number + 1) whose start register
// is the last register reached: the register goes on without a gap.

const (
	// ChainIDLen is the size of a chain id, bytes.
	ChainIDLen = 8
	// PaywordSize is the size of a payword (a SHA-256 digest), bytes.
	PaywordSize = 32
	// MaxChainLength is the longest chain: indexes fit 32 bits.
	MaxChainLength = 1<<32 - 1
	// MaxChainNumber is the largest chain number: seqs stay below 2^63.
	MaxChainNumber = 1<<31 - 1
	// MaxPaywordSteps bounds i − j in one ticket, so that checking one
	// costs at most this many hashes (about 0.4 ms).
	MaxPaywordSteps = 4096
	// MaxPaywordTicketSize bounds an encoded payword ticket.
	MaxPaywordTicketSize = 1 + 2 + 2 + MaxDeviceIDLen + 1 + 1 + ChainIDLen + 1 + 5 + 1 + 2 + PaywordSize
)

// ChainID names a device's chain.
type ChainID [ChainIDLen]byte

// Payword is one step of a chain.
type Payword [PaywordSize]byte

// paywordLabel separates a chain's hash from every other use of SHA-256.
const paywordLabel = "FPW1"

// PaywordStep returns H(w) = SHA-256("FPW1" || chain || w): the payword
// one index below w.
func PaywordStep(chain *ChainID, w *Payword) Payword {
	var in [len(paywordLabel) + ChainIDLen + PaywordSize]byte
	copy(in[:], paywordLabel)
	copy(in[len(paywordLabel):], chain[:])
	copy(in[len(paywordLabel)+ChainIDLen:], w[:])
	return sum256(in[:])
}

// PaywordWalk returns H^steps(w): the payword steps indexes below w.
func PaywordWalk(chain *ChainID, w Payword, steps uint64) Payword {
	for ; steps > 0; steps-- {
		w = PaywordStep(chain, &w)
	}
	return w
}

// PaywordSeq is the ticket seq of index i of chain number: number × 2^32
// + i, so a device's seqs keep growing from one chain to the next.
func PaywordSeq(number uint32, index uint32) uint64 { return uint64(number)<<32 | uint64(index) }

// Commitment is a device's commitment to a payword chain.
type Commitment struct {
	Device string  `json:"device"`
	Chain  ChainID `json:"chain"`
	Number uint32  `json:"number"`
	Meter  string  `json:"meter"`
	Units  uint64  `json:"units_per_step"`
	Length uint32  `json:"length"`
	Anchor Payword `json:"anchor"`
	Start  uint64  `json:"start_register"`
	Expiry uint64  `json:"expiry_ms"`
	Epoch  uint64  `json:"epoch,omitempty"`
}

// Commitment payload keys.
const (
	commitDevice = 1
	commitChain  = 2
	commitNumber = 3
	commitMeter  = 4
	commitUnits  = 5
	commitLength = 6
	commitAnchor = 7
	commitStart  = 8
	commitExpiry = 9
	commitEpoch  = 10
)

// Validate checks c against the limits of the wire format, and that its
// last register, start + length × units, fits 64 bits.
func (c *Commitment) Validate() error {
	if err := checkNameString(c.Device, MaxDeviceIDLen, "device id"); err != nil {
		return err
	}
	if err := checkNameString(c.Meter, MaxMeterNameLen, "meter name"); err != nil {
		return err
	}
	switch {
	case c.Number == 0 || c.Number > MaxChainNumber:
		return newError(ReasonFieldRange, "chain number must be in 1..2^31-1")
	case c.Units == 0:
		return newError(ReasonFieldRange, "units per step must be above 0")
	case c.Length == 0:
		return newError(ReasonFieldRange, "chain length must be in 1..2^32-1")
	case c.Expiry == 0:
		return newError(ReasonMissingField, "expiry is 0")
	}
	if hi, lo := mul64(c.Units, uint64(c.Length)); hi != 0 || lo+c.Start < lo {
		return newError(ReasonFieldRange, "the chain's last register does not fit 64 bits")
	}
	return nil
}

// Register returns the register that index i of the chain stands for.
// Validate guarantees it does not overflow for i ≤ Length.
func (c *Commitment) Register(i uint32) uint64 { return c.Start + uint64(i)*c.Units }

func mul64(a, b uint64) (hi, lo uint64) {
	const mask32 = 1<<32 - 1
	a0, a1 := a&mask32, a>>32
	b0, b1 := b&mask32, b>>32
	w0 := a0 * b0
	t := a1*b0 + w0>>32
	w1 := t&mask32 + a0*b1
	return a1*b1 + t>>32 + w1>>32, a * b
}

// AppendCommitmentPayload appends c's payload (deterministic CBOR).
func AppendCommitmentPayload(dst []byte, c *Commitment) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return dst, err
	}
	n := 10
	if c.Epoch != 0 {
		n++
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindCommitment))
	dst = append(dst, commitDevice)
	dst = appendText(dst, c.Device)
	dst = append(dst, commitChain)
	dst = appendBytes(dst, c.Chain[:])
	dst = append(dst, commitNumber)
	dst = appendUint(dst, uint64(c.Number))
	dst = append(dst, commitMeter)
	dst = appendText(dst, c.Meter)
	dst = append(dst, commitUnits)
	dst = appendUint(dst, c.Units)
	dst = append(dst, commitLength)
	dst = appendUint(dst, uint64(c.Length))
	dst = append(dst, commitAnchor)
	dst = appendBytes(dst, c.Anchor[:])
	dst = append(dst, commitStart)
	dst = appendUint(dst, c.Start)
	dst = append(dst, commitExpiry)
	dst = appendUint(dst, c.Expiry)
	if c.Epoch != 0 {
		dst = append(dst, commitEpoch)
		dst = appendUint(dst, c.Epoch)
	}
	return dst, nil
}

// AppendCommitment appends c as a COSE message signed (or MAC'd) by s.
func (e *Encoder) AppendCommitment(dst []byte, c *Commitment, s Signer) ([]byte, error) {
	p, err := AppendCommitmentPayload(e.payload(), c)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxTicketSize)
}

// ParseCommitment reads a chain commitment: its envelope into env (whose
// signature the caller verifies with the device's key) and its payload
// into c. Anything not exactly as AppendCommitment writes it is refused.
func ParseCommitment(b []byte, env *Envelope, c *Commitment) error {
	if len(b) > MaxTicketSize {
		return newError(ReasonTooLarge, "commitment is larger than its limit")
	}
	if err := ParseEnvelope(b, env); err != nil {
		return err
	}
	rd := reader{b: env.Payload}
	keys := rd.mapOf(11, "commitment payload")
	seen := 0
	*c = Commitment{}
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		switch k {
		case keyKind:
			if rd.uint("kind") != uint64(KindCommitment) && rd.err == nil {
				return newError(ReasonWrongKind, "not a chain commitment")
			}
		case commitDevice:
			c.Device = string(rd.text(MaxDeviceIDLen, "device id"))
		case commitChain:
			rd.fixed(c.Chain[:], "chain id")
		case commitNumber:
			if v := rd.uint("chain number"); v <= MaxChainNumber {
				c.Number = uint32(v)
			} else {
				rd.fail(ReasonFieldRange, "chain number above 2^31-1")
			}
		case commitMeter:
			c.Meter = string(rd.text(MaxMeterNameLen, "meter"))
		case commitUnits:
			c.Units = rd.uint("units per step")
		case commitLength:
			if v := rd.uint("chain length"); v <= MaxChainLength {
				c.Length = uint32(v)
			} else {
				rd.fail(ReasonFieldRange, "chain length above 2^32-1")
			}
		case commitAnchor:
			rd.fixed(c.Anchor[:], "anchor")
		case commitStart:
			c.Start = rd.uint("start register")
		case commitExpiry:
			c.Expiry = rd.uint("expiry")
		case commitEpoch:
			if c.Epoch = rd.uint("epoch"); c.Epoch == 0 && rd.err == nil {
				rd.fail(ReasonNonCanonical, "epoch 0 is written by leaving it out")
			}
		default:
			rd.fail(ReasonUnknownField, "unknown commitment field")
		}
		seen |= 1 << k
	}
	rd.done()
	if rd.err != nil {
		return rd.err
	}
	const required = 1<<keyKind | 1<<commitDevice | 1<<commitChain | 1<<commitNumber | 1<<commitMeter | 1<<commitUnits |
		1<<commitLength | 1<<commitAnchor | 1<<commitStart | 1<<commitExpiry
	if seen&required != required {
		return newError(ReasonMissingField, "commitment lacks a required field")
	}
	return c.Validate()
}

// PaywordTicket is one revealed step of a chain.
type PaywordTicket struct {
	Device string  `json:"device"`
	Chain  ChainID `json:"chain"`
	Index  uint32  `json:"index"`
	Word   Payword `json:"payword"`
}

// Payword ticket keys.
const (
	paywordDevice = 1
	paywordChain  = 2
	paywordIndex  = 3
	paywordWord   = 4
)

// AppendPaywordTicket appends p (deterministic CBOR, a bare map).
func AppendPaywordTicket(dst []byte, p *PaywordTicket) ([]byte, error) {
	if err := checkNameString(p.Device, MaxDeviceIDLen, "device id"); err != nil {
		return dst, err
	}
	if p.Index == 0 {
		return dst, newError(ReasonFieldRange, "payword index must be in 1..2^32-1")
	}
	dst = appendHead(dst, majorMap, 5)
	dst = append(dst, keyKind, byte(KindPayword))
	dst = append(dst, paywordDevice)
	dst = appendText(dst, p.Device)
	dst = append(dst, paywordChain)
	dst = appendBytes(dst, p.Chain[:])
	dst = append(dst, paywordIndex)
	dst = appendUint(dst, uint64(p.Index))
	dst = append(dst, paywordWord)
	return appendBytes(dst, p.Word[:]), nil
}

// IsPaywordTicket reports whether b starts as a payword ticket does (a
// CBOR map, where every other ticket is a tagged COSE message).
func IsPaywordTicket(b []byte) bool { return len(b) > 0 && b[0]>>5 == majorMap>>5 }

// ParsePaywordTicket reads a payword ticket; anything not exactly as
// AppendPaywordTicket writes it is refused.
func ParsePaywordTicket(b []byte, p *PaywordTicket) error {
	if len(b) > MaxPaywordTicketSize {
		return newError(ReasonTooLarge, "payword ticket is larger than its limit")
	}
	rd := reader{b: b}
	keys := rd.mapOf(5, "payword ticket")
	seen := 0
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		switch k {
		case keyKind:
			if rd.uint("kind") != uint64(KindPayword) && rd.err == nil {
				return newError(ReasonWrongKind, "not a payword ticket")
			}
		case paywordDevice:
			if d := rd.text(MaxDeviceIDLen, "device id"); string(d) != p.Device {
				p.Device = string(d)
			}
		case paywordChain:
			rd.fixed(p.Chain[:], "chain id")
		case paywordIndex:
			v := rd.uint("index")
			if (v == 0 || v > MaxChainLength) && rd.err == nil {
				rd.fail(ReasonFieldRange, "payword index must be in 1..2^32-1")
			}
			p.Index = uint32(v)
		case paywordWord:
			rd.fixed(p.Word[:], "payword")
		default:
			rd.fail(ReasonUnknownField, "unknown payword ticket field")
		}
		seen |= 1 << k
	}
	rd.done()
	if rd.err != nil {
		return rd.err
	}
	if seen != 1<<keyKind|1<<paywordDevice|1<<paywordChain|1<<paywordIndex|1<<paywordWord {
		return newError(ReasonMissingField, "payword ticket lacks a required field")
	}
	return checkNameString(p.Device, MaxDeviceIDLen, "device id")
}
