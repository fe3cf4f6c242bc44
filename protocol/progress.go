package protocol

// ChainProgress is a gateway's record, in its aggregate stream, of how far
// a device's payword chain went: the device's commitment as the device
// signed it, and the paywords at the chain's last reported index and at
// its index now. It proves the usage between them to a provider that
// trusts nothing the gateway says: the provider hashes w_to down to
// w_from and w_from down to the commitment's anchor (see
// provider.VerifyPayword). The gateway sends one per chain and aggregate
// window the chain moved in, once that window has sealed: it names the
// aggregate (key 10), whose proven quantity (aggregate key 16) the
// records naming it add up to, so a provider checks each aggregate's
// payword usage against the devices' own paywords. A chain's records
// follow one another: each one's from is the last one's to, except where
// a held payword left a gap (its usage is in the hold, not an aggregate).
//
// Its CDDL is with the other messages' in doc.go.
type ChainProgress struct {
	Gateway    string  `json:"gateway"`
	Seq        uint64  `json:"seq"`
	Provider   string  `json:"provider"`
	Account    string  `json:"account"`
	Commitment []byte  `json:"commitment"`
	From       uint32  `json:"from"`
	FromWord   Payword `json:"from_payword"`
	To         uint32  `json:"to"`
	ToWord     Payword `json:"to_payword"`
	// Aggregate is the seq, in the same stream, of the aggregate whose
	// window holds the usage from From to To; it precedes this record.
	Aggregate uint64 `json:"aggregate,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
}

// MaxCommitmentSize bounds a chain commitment carried in a progress
// record (one with every field at its limit is about 330 bytes).
const MaxCommitmentSize = 512

const (
	progressGateway    = 1
	progressSeq        = 2
	progressProvider   = 3
	progressAccount    = 4
	progressCommitment = 5
	progressFrom       = 6
	progressFromWord   = 7
	progressTo         = 8
	progressToWord     = 9
	progressAggregate  = 10
	progressEpoch      = 14
)

// Validate checks p against the limits of the wire format.
func (p *ChainProgress) Validate() error {
	for _, f := range [...]struct {
		v    string
		max  int
		what string
	}{{p.Gateway, MaxDeviceIDLen, "gateway id"}, {p.Provider, MaxDeviceIDLen, "provider"}, {p.Account, MaxAccountLen, "account"}} {
		if err := checkNameString(f.v, f.max, f.what); err != nil {
			return err
		}
	}
	switch {
	case p.Seq == 0 || p.Seq > MaxSeq:
		return newError(ReasonFieldRange, "seq must be in 1..2^63-1")
	case len(p.Commitment) == 0 || len(p.Commitment) > MaxCommitmentSize:
		return newError(ReasonFieldRange, "the commitment must be 1..512 bytes")
	case p.To <= p.From:
		return newError(ReasonFieldRange, "to must be above from")
	case p.Aggregate >= p.Seq:
		return newError(ReasonFieldRange, "the aggregate must precede the record")
	}
	return nil
}

// AppendChainProgressPayload appends p's payload (deterministic CBOR).
func AppendChainProgressPayload(dst []byte, p *ChainProgress) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return dst, err
	}
	n := 10
	if p.Aggregate != 0 {
		n++
	}
	if p.Epoch != 0 {
		n++
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindChainProgress))
	dst = append(dst, progressGateway)
	dst = appendText(dst, p.Gateway)
	dst = append(dst, progressSeq)
	dst = appendUint(dst, p.Seq)
	dst = append(dst, progressProvider)
	dst = appendText(dst, p.Provider)
	dst = append(dst, progressAccount)
	dst = appendText(dst, p.Account)
	dst = append(dst, progressCommitment)
	dst = appendBytes(dst, p.Commitment)
	dst = append(dst, progressFrom)
	dst = appendUint(dst, uint64(p.From))
	dst = append(dst, progressFromWord)
	dst = appendBytes(dst, p.FromWord[:])
	dst = append(dst, progressTo)
	dst = appendUint(dst, uint64(p.To))
	dst = append(dst, progressToWord)
	dst = appendBytes(dst, p.ToWord[:])
	if p.Aggregate != 0 {
		dst = append(dst, progressAggregate)
		dst = appendUint(dst, p.Aggregate)
	}
	if p.Epoch != 0 {
		dst = append(dst, progressEpoch)
		dst = appendUint(dst, p.Epoch)
	}
	return dst, nil
}

// AppendChainProgress appends p as a COSE_Sign1 signed by the gateway.
func (e *Encoder) AppendChainProgress(dst []byte, p *ChainProgress, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "chain progress records are signed with EdDSA")
	}
	pl, err := AppendChainProgressPayload(e.payload(), p)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, pl, MaxMessageSize)
}

// ParseChainProgress reads a chain progress record (its envelope into
// env, for the caller to verify with the gateway's key); anything not
// exactly as AppendChainProgress writes it is refused.
func ParseChainProgress(b []byte, env *Envelope, p *ChainProgress) error {
	if len(b) > MaxMessageSize {
		return newError(ReasonTooLarge, "chain progress record is larger than its limit")
	}
	if err := ParseEnvelope(b, env); err != nil {
		return err
	}
	rd := reader{b: env.Payload}
	keys := rd.mapOf(12, "chain progress payload")
	seen := 0
	*p = ChainProgress{}
	index := func(what string) uint32 {
		v := rd.uint(what)
		if v > MaxChainLength {
			rd.fail(ReasonFieldRange, what+" above 2^32-1")
		}
		return uint32(v)
	}
	for {
		k, ok := keys.next()
		if !ok {
			break
		}
		switch k {
		case keyKind:
			if rd.uint("kind") != uint64(KindChainProgress) && rd.err == nil {
				return newError(ReasonWrongKind, "not a chain progress record")
			}
		case progressGateway:
			p.Gateway = string(rd.text(MaxDeviceIDLen, "gateway id"))
		case progressSeq:
			p.Seq = rd.uint("seq")
		case progressProvider:
			p.Provider = string(rd.text(MaxDeviceIDLen, "provider"))
		case progressAccount:
			p.Account = string(rd.text(MaxAccountLen, "account"))
		case progressCommitment:
			p.Commitment = append([]byte(nil), rd.bytes(MaxCommitmentSize, "commitment")...)
		case progressFrom:
			p.From = index("from")
		case progressFromWord:
			rd.fixed(p.FromWord[:], "w_from")
		case progressTo:
			p.To = index("to")
		case progressToWord:
			rd.fixed(p.ToWord[:], "w_to")
		case progressAggregate:
			if p.Aggregate = rd.uint("aggregate"); p.Aggregate == 0 && rd.err == nil {
				rd.fail(ReasonNonCanonical, "no aggregate is written by leaving it out")
			}
		case progressEpoch:
			if p.Epoch = rd.uint("epoch"); p.Epoch == 0 && rd.err == nil {
				rd.fail(ReasonNonCanonical, "epoch 0 is written by leaving it out")
			}
		default:
			rd.fail(ReasonUnknownField, "unknown chain progress field")
		}
		if k < 32 {
			seen |= 1 << k
		}
	}
	rd.done()
	if rd.err != nil {
		return rd.err
	}
	const required = 1<<keyKind | 1<<progressGateway | 1<<progressSeq | 1<<progressProvider | 1<<progressAccount |
		1<<progressCommitment | 1<<progressFrom | 1<<progressFromWord | 1<<progressTo | 1<<progressToWord
	if seen&required != required {
		return newError(ReasonMissingField, "chain progress record lacks a required field")
	}
	return p.Validate()
}
