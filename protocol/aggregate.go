package protocol

// Aggregate is a sealed total the gateway forwards to a provider: the usage
// and money of one (provider, account, meter) over one window, signed with
// the gateway's Ed25519 key (COSE_Sign1).
//
//	aggregate-payload = {
//	  0: 3,                 ; kind: aggregate
//	  1: gateway-id,        ; tstr, 1..64 of [A-Za-z0-9._-]
//	  2: seq,               ; uint, gapless per gateway from 1: the idempotency key
//	  3: provider,          ; tstr, who is owed the amount
//	  4: account,           ; tstr, who owes it
//	  5: meter,             ; tstr, meter name
//	  6: window-start,      ; uint, Unix milliseconds, inclusive
//	  7: window-end,        ; uint, Unix milliseconds, exclusive, > window-start
//	  8: quantity,          ; uint, summed usage in the meter's base unit
//	  9: amount,            ; uint, nano-units of currency, exact (no rounding)
//	  10: currency,         ; tstr, ISO 4217 code
//	  11: tickets,          ; uint, number of tickets included
//	  12: merkle-root,      ; bstr .size 32, SHA-256 Merkle root over the included tickets
//	  ? 13: corrects,       ; uint > 0, seq of the aggregate this one corrects
//	  ? 14: stream-epoch,   ; uint > 0, made at random with the gateway's state file
//	  ? 15: [1*8 band],     ; the price bands, sorted by name (bytewise), names distinct
//	  ? 16: proven,         ; uint > 0, <= quantity: the part of key 8 payword chains prove;
//	                        ; the chain progress records naming this seq add up to it
//	}
//	band = [name: tstr, quantity: uint, amount: uint]
//	                        ; name: 1..24 bytes of printable ASCII ("tier 1",
//	                        ; "window peak", "free", "minimum", "unsplit");
//	                        ; the quantities add up to key 8, the amounts to key 9
//
// An aggregate stream is named by the key that signs it (the COSE kid)
// and its stream epoch: receivers book each (kid, epoch, seq) once. The
// same (kid, epoch, seq) with other bytes is a conflict, never a
// duplicate; a new epoch from a known kid is a stream reset (the gateway
// lost or replaced its state file and counts seqs from 1 again). An
// aggregate without key 14 has epoch 0: it comes from a state file made
// before stream epochs existed. The gateway id is a label bound to the
// key by the receiver, not an identity: any number of gateways may
// share one.
type Aggregate struct {
	Gateway     string `json:"gateway"`
	Seq         uint64 `json:"seq"`
	Provider    string `json:"provider"`
	Account     string `json:"account"`
	Meter       string `json:"meter"`
	WindowStart uint64 `json:"window_start"` // Unix ms, inclusive
	WindowEnd   uint64 `json:"window_end"`   // Unix ms, exclusive
	Quantity    uint64 `json:"quantity"`     // meter base units
	Amount      uint64 `json:"amount"`       // nano-units of Currency
	Currency    string `json:"currency"`
	Tickets     uint64 `json:"tickets"`
	MerkleRoot  []byte `json:"merkle_root"`        // MerkleRootLen bytes
	Corrects    uint64 `json:"corrects,omitempty"` // 0 if this is not a correction
	// Epoch names the gateway's aggregate stream together with the
	// signing key: random, made with the state file; 0 for a state file
	// older than stream epochs.
	Epoch uint64 `json:"stream_epoch,omitempty"`
	// Bands splits Quantity and Amount by price band (a tariff's tiers and
	// time windows, the free allowance, the minimum-charge top-up): what a
	// statement lists per band. Absent from gateways older than bands.
	Bands []AggregateBand `json:"bands,omitempty"`
	// Proven is the part of Quantity that payword tickets reported: the
	// chain progress records that name this aggregate (ChainProgress
	// .Aggregate) prove it, and a provider checks that they add up to it.
	Proven uint64 `json:"payword_quantity,omitempty"`
	// Tariff is the tariff version that priced every ticket in it: a
	// provider's tariff_set command's id, or "local-N" for the gateway's
	// own tariff file; absent from a gateway without versions and from a
	// correction of late usage priced by several.
	Tariff string `json:"tariff_version,omitempty"`
}

// AggregateBand is the part of an aggregate that fell in one price band.
type AggregateBand struct {
	Band     string `json:"band"`
	Quantity uint64 `json:"quantity"`
	Amount   uint64 `json:"amount"`
}

// Aggregate payload keys.
const (
	aggGateway     = 1
	aggSeq         = 2
	aggProvider    = 3
	aggAccount     = 4
	aggMeter       = 5
	aggWindowStart = 6
	aggWindowEnd   = 7
	aggQuantity    = 8
	aggAmount      = 9
	aggCurrency    = 10
	aggTickets     = 11
	aggMerkleRoot  = 12
	aggCorrects    = 13
	aggEpoch       = 14
	aggBands       = 15
	aggProven      = 16
	aggTariff      = 17
)

// Validate checks a against the limits and rules of the wire format.
func (a *Aggregate) Validate() error {
	for _, f := range [...]struct {
		v    string
		max  int
		what string
	}{
		{a.Gateway, MaxDeviceIDLen, "gateway id"},
		{a.Provider, MaxDeviceIDLen, "provider"},
		{a.Account, MaxAccountLen, "account"},
		{a.Meter, MaxMeterNameLen, "meter name"},
		{a.Currency, MaxCurrencyLen, "currency"},
	} {
		if err := checkNameString(f.v, f.max, f.what); err != nil {
			return err
		}
	}
	if a.Seq == 0 || a.Seq > MaxSeq {
		return newError(ReasonFieldRange, "seq must be in 1..2^63-1")
	}
	if a.WindowStart == 0 || a.WindowEnd <= a.WindowStart {
		return newError(ReasonFieldRange, "window must have 0 < start < end")
	}
	if len(a.MerkleRoot) != MerkleRootLen {
		return newError(ReasonFieldRange, "merkle root must be 32 bytes")
	}
	if a.Corrects >= a.Seq {
		return newError(ReasonFieldRange, "a correction must follow the aggregate it corrects")
	}
	if a.Proven > a.Quantity {
		return newError(ReasonFieldRange, "the proven quantity must not exceed the quantity")
	}
	if a.Tariff != "" && !ValidName(a.Tariff, MaxDeviceIDLen) {
		return newError(ReasonBadName, "a tariff version is 1..64 of [A-Za-z0-9._-]")
	}
	return a.validateBands()
}

// ValidBandName tells whether an aggregate can carry name as a price
// band's: 1..MaxBandNameLen bytes of printable ASCII.
func ValidBandName(name string) bool {
	if name == "" || len(name) > MaxBandNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] > 0x7e {
			return false
		}
	}
	return true
}

// validateBands checks the bands: at most MaxAggregateBands, named, sorted
// and distinct, adding up to the aggregate's quantity and amount.
func (a *Aggregate) validateBands() error {
	if len(a.Bands) > MaxAggregateBands {
		return newError(ReasonFieldRange, "too many price bands")
	}
	var q, amt uint64
	for i, b := range a.Bands {
		if b.Band == "" || len(b.Band) > MaxBandNameLen {
			return newError(ReasonFieldRange, "a price band's name must be 1..24 bytes")
		}
		if !ValidBandName(b.Band) {
			return newError(ReasonBadName, "a price band's name must be printable ASCII")
		}
		if i > 0 && a.Bands[i-1].Band >= b.Band {
			return newError(ReasonFieldRange, "price bands must be sorted by name, each once")
		}
		if q+b.Quantity < q || amt+b.Amount < amt {
			return newError(ReasonFieldRange, "price bands overflow")
		}
		q, amt = q+b.Quantity, amt+b.Amount
	}
	if len(a.Bands) > 0 && (q != a.Quantity || amt != a.Amount) {
		return newError(ReasonFieldRange, "price bands must add up to the quantity and the amount")
	}
	return nil
}

// AppendAggregatePayload validates a and appends its deterministic payload.
func AppendAggregatePayload(dst []byte, a *Aggregate) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return dst, err
	}
	n := 13
	for _, set := range [...]bool{a.Corrects != 0, a.Epoch != 0, len(a.Bands) > 0, a.Proven != 0, a.Tariff != ""} {
		if set {
			n++
		}
	}
	dst = appendHead(dst, majorMap, uint64(n))
	dst = append(dst, keyKind, byte(KindAggregate))
	dst = appendUint(dst, aggGateway)
	dst = appendText(dst, a.Gateway)
	dst = appendUint(dst, aggSeq)
	dst = appendUint(dst, a.Seq)
	dst = appendUint(dst, aggProvider)
	dst = appendText(dst, a.Provider)
	dst = appendUint(dst, aggAccount)
	dst = appendText(dst, a.Account)
	dst = appendUint(dst, aggMeter)
	dst = appendText(dst, a.Meter)
	dst = appendUint(dst, aggWindowStart)
	dst = appendUint(dst, a.WindowStart)
	dst = appendUint(dst, aggWindowEnd)
	dst = appendUint(dst, a.WindowEnd)
	dst = appendUint(dst, aggQuantity)
	dst = appendUint(dst, a.Quantity)
	dst = appendUint(dst, aggAmount)
	dst = appendUint(dst, a.Amount)
	dst = appendUint(dst, aggCurrency)
	dst = appendText(dst, a.Currency)
	dst = appendUint(dst, aggTickets)
	dst = appendUint(dst, a.Tickets)
	dst = appendUint(dst, aggMerkleRoot)
	dst = appendBytes(dst, a.MerkleRoot)
	if a.Corrects != 0 {
		dst = appendUint(dst, aggCorrects)
		dst = appendUint(dst, a.Corrects)
	}
	if a.Epoch != 0 {
		dst = appendUint(dst, aggEpoch)
		dst = appendUint(dst, a.Epoch)
	}
	if len(a.Bands) > 0 {
		dst = appendUint(dst, aggBands)
		dst = appendHead(dst, majorArray, uint64(len(a.Bands)))
		for _, b := range a.Bands {
			dst = appendHead(dst, majorArray, 3)
			dst = appendText(dst, b.Band)
			dst = appendUint(dst, b.Quantity)
			dst = appendUint(dst, b.Amount)
		}
	}
	if a.Proven != 0 {
		dst = appendUint(dst, aggProven)
		dst = appendUint(dst, a.Proven)
	}
	if a.Tariff != "" {
		dst = appendUint(dst, aggTariff)
		dst = appendText(dst, a.Tariff)
	}
	return dst, nil
}

// AppendAggregate validates a, signs it with the gateway's signer and
// appends the tagged COSE_Sign1 to dst.
func (e *Encoder) AppendAggregate(dst []byte, a *Aggregate, s Signer) ([]byte, error) {
	if s.Algorithm() != AlgEdDSA {
		return dst, newError(ReasonUnsupportedAlg, "aggregates are signed with EdDSA")
	}
	p, err := AppendAggregatePayload(e.payload(), a)
	if err != nil {
		return dst, err
	}
	return e.seal(dst, s, p, MaxAggregateSize)
}
