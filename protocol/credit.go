package protocol

// Credit is a gateway's record of money credited to an account at the
// edge — a top-up or a redeemed voucher — sent upstream through the same
// outbox as the aggregates, numbered in the same gapless stream, so a
// provider can reconcile money received against credit granted, and see
// one voucher redeemed at two gateways. A COSE_Sign1 by the gateway key.
//
//	credit-payload = {
//	  0: 5,                 ; kind: credit
//	  1: id,                ; gateway id
//	  2: seq,               ; the stream's seq (shared with the aggregates)
//	  3: id,                ; account credited
//	  4: uint .gt 0,        ; amount, nanos
//	  5: currency,
//	  6: ms,                ; when it was credited
//	  7: "top_up" / "voucher",
//	  8: tstr,              ; the top-up's reference or the voucher's id (1..128 bytes)
//	  ? 14: uint .gt 0,     ; stream epoch, as in an aggregate
//	}
type Credit struct {
	Gateway  string `json:"gateway"`
	Seq      uint64 `json:"seq"`
	Account  string `json:"account"`
	Amount   uint64 `json:"amount_nanos"`
	Currency string `json:"currency"`
	Time     uint64 `json:"time_ms"`
	Kind     string `json:"kind"` // CreditTopUp or CreditVoucher
	Ref      string `json:"ref"`
	Epoch    uint64 `json:"stream_epoch,omitempty"`
}

// Credit kinds.
const (
	CreditTopUp   = "top_up"
	CreditVoucher = "voucher"
)

// Credit payload keys.
const (
	creGateway  = 1
	creSeq      = 2
	creAccount  = 3
	creAmount   = 4
	creCurrency = 5
	creTime     = 6
	creKind     = 7
	creRef      = 8
	creEpoch    = 14
)

// MaxCreditRefLen bounds a credit's reference.
const MaxCreditRefLen = 128

// Validate checks c against the limits and rules of the wire format.
func (c *Credit) Validate() error {
	for _, f := range [...]struct {
		v    string
		max  int
		what string
	}{
		{c.Gateway, MaxDeviceIDLen, "gateway id"},
		{c.Account, MaxAccountLen, "account"},
		{c.Currency, MaxCurrencyLen, "currency"},
	} {
		if err := checkNameString(f.v, f.max, f.what); err != nil {
			return err
		}
	}
	if c.Seq == 0 || c.Seq > MaxSeq {
		return newError(ReasonFieldRange, "seq must be in 1..2^63-1")
	}
	if c.Amount == 0 || c.Amount > 1<<63-1 || c.Time == 0 {
		return newError(ReasonFieldRange, "a credit has an amount in 1..2^63-1 and a time")
	}
	if c.Kind != CreditTopUp && c.Kind != CreditVoucher {
		return newError(ReasonFieldRange, "credit kind must be top_up or voucher")
	}
	if len(c.Ref) == 0 || len(c.Ref) > MaxCreditRefLen {
		return newError(ReasonStringTooLong, "credit ref must be 1..128 bytes")
	}
	return nil
}

// AppendCreditPayload validates c and appends its deterministic payload.
func AppendCreditPayload(dst []byte, c *Credit) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return dst, err
	}
	n := 9
	if c.Epoch != 0 {
		n++
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindCredit))
	dst = appendUint(dst, creGateway)
	dst = appendText(dst, c.Gateway)
	dst = appendUint(dst, creSeq)
	dst = appendUint(dst, c.Seq)
	dst = appendUint(dst, creAccount)
	dst = appendText(dst, c.Account)
	dst = appendUint(dst, creAmount)
	dst = appendUint(dst, c.Amount)
	dst = appendUint(dst, creCurrency)
	dst = appendText(dst, c.Currency)
	dst = appendUint(dst, creTime)
	dst = appendUint(dst, c.Time)
	dst = appendUint(dst, creKind)
	dst = appendText(dst, c.Kind)
	dst = appendUint(dst, creRef)
	dst = appendText(dst, c.Ref)
	if c.Epoch != 0 {
		dst = appendUint(dst, creEpoch)
		dst = appendUint(dst, c.Epoch)
	}
	return dst, nil
}

// AppendCredit validates c, signs it with the gateway's signer and
// appends the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendCredit(dst []byte, c *Credit, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "credits are signed with EdDSA")
	}
	p, err := AppendCreditPayload(e.payload(), c)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxAggregateSize)
}
