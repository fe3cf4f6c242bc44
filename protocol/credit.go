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
//	  7: "top_up" / "voucher" / "adjustment",
//	  8: tstr,              ; the top-up's or adjustment's reference, or the voucher's id (1..128 bytes)
//	  ? 9: 1,               ; an adjustment that debits: the amount is taken from the account
//	  ? 10: id,             ; an adjustment's reason code (required for one), e.g. "double_redemption"
//	  ? 11: id,             ; the voucher an adjustment settles (one credited twice, say)
//	  ? 14: uint .gt 0,     ; stream epoch, as in an aggregate
//	}
//
// An adjustment is every change to an account outside a ticket, a top-up
// and a voucher: an operator's signed, audited, idempotent correction, a
// credit or (key 9) a debit.
type Credit struct {
	Gateway  string `json:"gateway"`
	Seq      uint64 `json:"seq"`
	Account  string `json:"account"`
	Amount   uint64 `json:"amount_nanos"`
	Currency string `json:"currency"`
	Time     uint64 `json:"time_ms"`
	Kind     string `json:"kind"` // CreditTopUp or CreditVoucher
	Ref      string `json:"ref"`
	// Debit, Reason and Voucher are an adjustment's: it takes the amount
	// (Debit) or adds it, why (a reason code), and the voucher it settles.
	Debit   bool   `json:"debit,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Voucher string `json:"voucher,omitempty"`
	Epoch   uint64 `json:"stream_epoch,omitempty"`
}

// Credit kinds.
const (
	CreditTopUp      = "top_up"
	CreditVoucher    = "voucher"
	CreditAdjustment = "adjustment"
)

// MaxReasonLen bounds an adjustment's reason code.
const MaxReasonLen = 32

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
	creDebit    = 9
	creReason   = 10
	creVoucher  = 11
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
	if c.Kind != CreditTopUp && c.Kind != CreditVoucher && c.Kind != CreditAdjustment {
		return newError(ReasonFieldRange, "credit kind must be top_up, voucher or adjustment")
	}
	if c.Kind == CreditAdjustment {
		if err := checkNameString(c.Reason, MaxReasonLen, "adjustment reason"); err != nil {
			return err
		}
		if c.Voucher != "" {
			if err := checkNameString(c.Voucher, MaxDeviceIDLen, "voucher"); err != nil {
				return err
			}
		}
	} else if c.Debit || c.Reason != "" || c.Voucher != "" {
		return newError(ReasonFieldRange, "only an adjustment debits, has a reason or names a voucher")
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
	for _, set := range [...]bool{c.Debit, c.Reason != "", c.Voucher != "", c.Epoch != 0} {
		if set {
			n++
		}
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
	if c.Debit {
		dst = appendUint(dst, creDebit)
		dst = appendUint(dst, 1)
	}
	if c.Reason != "" {
		dst = appendUint(dst, creReason)
		dst = appendText(dst, c.Reason)
	}
	if c.Voucher != "" {
		dst = appendUint(dst, creVoucher)
		dst = appendText(dst, c.Voucher)
	}
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
