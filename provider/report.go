package provider

import (
	"context"
	"time"

	"github.com/farthing-iot/farthing/protocol"
)

// Total is what one account owes one provider in one currency.
type Total struct {
	Provider   string `json:"provider"`
	Account    string `json:"account"`
	Currency   string `json:"currency"`
	Amount     uint64 `json:"amount_nanos"`
	Quantity   uint64 `json:"quantity"`
	Tickets    uint64 `json:"tickets"`
	Aggregates uint64 `json:"aggregates"`
}

// StreamReport is one aggregate stream as booked.
type StreamReport struct {
	Stream     string `json:"stream"` // protocol.StreamID.String()
	KeyID      string `json:"key_id"`
	Epoch      uint64 `json:"epoch"`
	Gateway    string `json:"gateway"`
	High       uint64 `json:"highest_seq"`
	Aggregates uint64 `json:"aggregates"`
	// Missing counts the seqs below High not booked; Gaps lists the first
	// maxGaps of them.
	Missing uint64   `json:"missing"`
	Gaps    []uint64 `json:"gaps,omitempty"`
	// ResetFrom is set when this stream began as a new epoch of a key
	// already seen: the gateway lost or replaced its state file.
	ResetFrom *Reset `json:"reset_from,omitempty"`
}

// Reset is the epoch a stream reset replaced, and how far it had got.
type Reset struct {
	Epoch   uint64 `json:"epoch"`
	LastSeq uint64 `json:"last_seq"`
}

// Held is an aggregate kept aside, not booked: a conflict or a wrong
// gateway. Its money is in Amount; an operator decides what it is.
type Held struct {
	Stream   string `json:"stream"`
	Seq      uint64 `json:"seq"`
	Reason   string `json:"reason"` // conflict | wrong_gateway
	At       int64  `json:"at_ms"`
	Gateway  string `json:"gateway"` // as the aggregate claims
	Provider string `json:"provider"`
	Account  string `json:"account"`
	Amount   uint64 `json:"amount_nanos"`
	Currency string `json:"currency"`
	Bytes    string `json:"bytes_hex"`
}

// Report is the receiver's view: totals, every stream with its gaps and
// reset, the held aggregates, and the counters.
type Report struct {
	Totals  []Total        `json:"totals"`
	Streams []StreamReport `json:"streams"`
	Held    []Held         `json:"held"`
	// Credits are the top-ups and vouchers the gateways credited.
	Credits []CreditTotal `json:"credits"`
	// Doubles are vouchers credited twice (at two gateways, say).
	Doubles []DoubleRedemption `json:"double_redemptions"`
	// Paywords is the usage payword devices' chains proved, checked by the
	// receiver itself from each chain progress record's paywords and the
	// device's commitment: by provider, account and meter.
	Paywords []PaywordTotal `json:"paywords"`
	// PaywordClaims are the aggregates whose payword quantity is not
	// reconciled: not all proven yet, proven beyond it, or (Booked false)
	// named by progress records before the aggregate itself came. A
	// gateway sends the records within seconds of a window's seal: a claim
	// that stays here is usage charged without the devices' proof.
	PaywordClaims []PaywordClaim `json:"payword_claims"`
	// Quarantine is the tickets the gateways held, each as its latest
	// record says: still held, released (its charge is in the aggregates)
	// or voided (never charged).
	Quarantine []protocol.Hold `json:"quarantine"`
	// Gaps and High are keyed by stream (protocol.StreamID.String()).
	// Restores are the restores gateways announced; Superseded the money
	// they took out of the payable books (superseded_by_restore).
	Restores   []RestoreReport     `json:"restores"`
	Superseded []Superseded        `json:"superseded_by_restore"`
	Gaps       map[string][]uint64 `json:"gaps"`
	High       map[string]uint64   `json:"highest_seq"`
	Stats      Stats               `json:"stats"`
}

// PaywordTotal is the usage payword chains proved for one provider,
// account and meter, in the meter's units, over Records progress records,
// beside what the aggregates claimed of payword usage (their Proven):
// equal when every claim is proven (Report.PaywordClaims lists those that
// are not). Unattested is the part of Quantity whose commitments no
// device key checked.
type PaywordTotal struct {
	Provider   string `json:"provider"`
	Account    string `json:"account"`
	Meter      string `json:"meter"`
	Quantity   uint64 `json:"quantity"`
	Records    uint64 `json:"records"`
	Claimed    uint64 `json:"claimed"`
	Unattested uint64 `json:"unattested"`
}

// Report reads the books in one transaction.
func (r *Receiver) Report() (*Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := r.books.Report(ctx)
	if rep != nil {
		rep.Stats = r.Stats()
		for i := range rep.Doubles {
			rep.Doubles[i].Fix = DoubleFix(rep.Doubles[i])
		}
	}
	return rep, err
}

// CreditTotal is what the gateways credited to one account in one
// currency, by kind (top_up or voucher).
type CreditTotal struct {
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Kind     string `json:"kind"`
	Amount   uint64 `json:"amount_nanos"`
	Count    uint64 `json:"count"`
}

// DoubleRedemption is a voucher credited by two credit records.
type DoubleRedemption struct {
	Voucher  string `json:"voucher"`
	First    string `json:"first"`  // stream/seq of the first credit
	Second   string `json:"second"` // stream/seq of this one
	Account  string `json:"account"`
	Amount   uint64 `json:"amount_nanos"` // credited the second time
	Currency string `json:"currency"`
	// Gateway credited it the second time.
	Gateway string `json:"gateway,omitempty"`
	// Fix is the command that settles it (DoubleFix) while it is not.
	Fix string `json:"fix,omitempty"`
	// Resolved is set once a gateway's adjustment names the voucher: the
	// adjustment (stream/seq) and what it added (negative: took back).
	Resolved *Resolution `json:"resolved,omitempty"`
}

// Resolution is the adjustment that settled a voucher credited twice.
type Resolution struct {
	Adjustment string `json:"adjustment"` // stream/seq
	Amount     int64  `json:"amount_nanos"`
	Reason     string `json:"reason"`
}
