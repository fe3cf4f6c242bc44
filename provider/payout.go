package provider

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.yaml.in/yaml/v3"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Payout buckets of the receiver's file:
//
//	unpaid      provider 0 currency 0 kid epoch seq → amount(8): a booked aggregate no payout covers yet
//	payouts     provider 0 number(8) → a Payout (JSON), immutable once written
//	payoutmeta  provider → last payout number(8), carried nanos(8), currency
//	payoutslot  provider → the last scheduled time (unix seconds, 8) a payout was considered at
var (
	bucketUnpaid     = []byte("unpaid")
	bucketPayouts    = []byte("payouts")
	bucketPayoutMeta = []byte("payoutmeta")
	bucketPayoutSlot = []byte("payoutslot")
)

// ErrPolicy: a payout policy that does not hold together.
var ErrPolicy = errors.New("provider: bad payout policy")

// PayoutPolicy is how one provider's wallet is paid out (a receiver's
// payouts file, YAML).
type PayoutPolicy struct {
	Provider string `yaml:"provider"`
	// Threshold: pay once the wallet (unpaid aggregates plus what was
	// carried) holds at least this, e.g. "10.00 EUR".
	Threshold string `yaml:"threshold"`
	// RailFee and RailMaxBasisPoints derive the threshold instead: pay
	// once the payout rail's fee (fixed RailFee plus RailBasisPoints) is
	// under RailMaxBasisPoints of the sum (metering.ThresholdForFee). The
	// larger of the two thresholds applies.
	RailFee            string `yaml:"rail_fee"`
	RailBasisPoints    uint32 `yaml:"rail_fee_bps"`
	RailMaxBasisPoints uint32 `yaml:"rail_fee_max_bps"`
	// The platform's fee: basis points of the gross plus a fixed part, at
	// most a cap.
	FeeBasisPoints uint32 `yaml:"platform_fee_bps"`
	FeeFixed       string `yaml:"platform_fee_fixed"`
	FeeCap         string `yaml:"platform_fee_cap"`
	// Payees share what is left by weight (a creator 70, a publisher 30).
	Payees []PayeeWeight `yaml:"payees"`
	// Rounding is "carry" (the default and only rule for payouts): whole
	// minor units are paid and the rest carried into the next payout.
	Rounding string `yaml:"rounding"`
	// OnGap is what a payout does while a stream that feeds the wallet
	// misses an aggregate below its highest seq: "wait" (the default: no
	// payout until the gap closes) or "pay" (pay what arrived, and record
	// the gap in the payout).
	OnGap string `yaml:"on_gap"`
	// Schedule is when the receiver pays out on its own: a comma-separated
	// list of "threshold" (as soon as the wallet reaches the threshold; the
	// default) and "daily HH:MM [ZONE]" (once a day at that time in the
	// IANA zone, UTC without one; a receiver that was down at that time
	// pays when it comes back). "farthing payouts run" pays whatever has
	// reached its threshold, whatever the schedule.
	Schedule string `yaml:"schedule"`
}

// Schedule is a compiled PayoutPolicy.Schedule.
type Schedule struct {
	// Threshold: a payout is due whenever the wallet reaches the threshold.
	Threshold bool
	// Daily: a payout is considered once a day (LastSlot).
	Daily     bool
	hour, min int
	loc       *time.Location
}

// ParseSchedule reads a PayoutPolicy.Schedule.
func ParseSchedule(s string) (Schedule, error) {
	if strings.TrimSpace(s) == "" {
		return Schedule{Threshold: true}, nil
	}
	var sc Schedule
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		switch {
		case len(f) == 1 && f[0] == "threshold":
			sc.Threshold = true
		case (len(f) == 2 || len(f) == 3) && f[0] == "daily" && !sc.Daily:
			at, err := time.Parse("15:04", f[1])
			if err != nil {
				return sc, fmt.Errorf("schedule %q: the time of day as HH:MM", part)
			}
			sc.Daily, sc.hour, sc.min, sc.loc = true, at.Hour(), at.Minute(), time.UTC
			if len(f) == 3 {
				if sc.loc, err = time.LoadLocation(f[2]); err != nil {
					return sc, fmt.Errorf("schedule %q: %v", part, err)
				}
			}
		default:
			return sc, fmt.Errorf("schedule %q: want threshold and/or daily HH:MM [ZONE]", part)
		}
	}
	return sc, nil
}

// LastSlot is the latest daily payout time at or before now.
func (sc Schedule) LastSlot(now time.Time) time.Time {
	l := now.In(sc.loc)
	t := time.Date(l.Year(), l.Month(), l.Day(), sc.hour, sc.min, 0, 0, sc.loc)
	if t.After(now) {
		t = time.Date(l.Year(), l.Month(), l.Day()-1, sc.hour, sc.min, 0, 0, sc.loc)
	}
	return t
}

// PayeeWeight is one payee of a provider's payouts.
type PayeeWeight struct {
	ID     string `yaml:"id"`
	Weight uint64 `yaml:"weight"`
}

// PayoutPolicies is the payouts file.
type PayoutPolicies struct {
	Policies []PayoutPolicy `yaml:"payouts"`
}

// ReadPayoutPolicies reads and checks a payouts file.
func ReadPayoutPolicies(path string) (map[string]PayoutPolicy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f PayoutPolicies
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: %v", ErrPolicy, path, err)
	}
	out := map[string]PayoutPolicy{}
	for i, p := range f.Policies {
		if _, _, err := p.Compile(); err != nil {
			return nil, fmt.Errorf("%w: %s: payouts[%d] (%s): %v", ErrPolicy, path, i, p.Provider, err)
		}
		if _, dup := out[p.Provider]; dup {
			return nil, fmt.Errorf("%w: %s: payouts[%d]: provider %q twice", ErrPolicy, path, i, p.Provider)
		}
		out[p.Provider] = p
	}
	return out, nil
}

// Compile returns the policy's threshold and fee.
func (p PayoutPolicy) Compile() (metering.Money, metering.PlatformFee, error) {
	var th metering.Money
	var fee metering.PlatformFee
	if !protocol.ValidName(p.Provider, protocol.MaxDeviceIDLen) {
		return th, fee, fmt.Errorf("provider %q: use 1..64 of [A-Za-z0-9._-]", p.Provider)
	}
	if len(p.Payees) == 0 {
		return th, fee, errors.New("no payees")
	}
	for _, w := range p.Payees {
		if w.ID == "" || w.Weight == 0 {
			return th, fee, fmt.Errorf("payee %q: an id and a weight > 0", w.ID)
		}
	}
	if p.OnGap != "" && p.OnGap != "wait" && p.OnGap != "pay" {
		return th, fee, fmt.Errorf("on_gap %q: want wait or pay", p.OnGap)
	}
	if _, err := ParseSchedule(p.Schedule); err != nil {
		return th, fee, err
	}
	if p.Rounding != "" && p.Rounding != "carry" {
		return th, fee, fmt.Errorf("rounding %q: payouts carry the remainder (carry)", p.Rounding)
	}
	var err error
	if th, err = metering.ParseMoney(p.Threshold); err != nil {
		return th, fee, fmt.Errorf("threshold: %v", err)
	}
	if p.RailFee != "" {
		rf, err := metering.ParseMoney(p.RailFee)
		if err != nil || rf.Currency != th.Currency {
			return th, fee, fmt.Errorf("rail_fee %q: a fee in %s", p.RailFee, th.Currency)
		}
		derived, err := metering.ThresholdForFee(rf.Nanos, p.RailBasisPoints, p.RailMaxBasisPoints)
		if err != nil {
			return th, fee, fmt.Errorf("rail fee: %v", err)
		}
		th.Nanos = max(th.Nanos, derived)
	}
	fee.BasisPoints = p.FeeBasisPoints
	for _, f := range []struct {
		s  string
		to *metering.Nanos
	}{{p.FeeFixed, &fee.Fixed}, {p.FeeCap, &fee.Cap}} {
		if f.s == "" {
			continue
		}
		m, err := metering.ParseMoney(f.s)
		if err != nil || m.Currency != th.Currency || m.Nanos < 0 {
			return th, fee, fmt.Errorf("platform fee %q: an amount in %s", f.s, th.Currency)
		}
		*f.to = m.Nanos
	}
	return th, fee, nil
}

// Payout is one payout of a provider's wallet: numbered per provider,
// immutable once made, covering exactly the aggregates it lists.
// Gross = Fee + Σ Payees + CarryOut; Gross = Σ aggregates + CarryIn.
type Payout struct {
	Provider string         `json:"provider"`
	Number   uint64         `json:"number"`
	Time     int64          `json:"time_ms"`
	Currency string         `json:"currency"`
	CarryIn  metering.Nanos `json:"carry_in_nanos"`
	Gross    metering.Nanos `json:"gross_nanos"`
	Fee      metering.Nanos `json:"platform_fee_nanos"`
	Payees   []PayeeShare   `json:"payees"`
	CarryOut metering.Nanos `json:"carry_out_nanos"`
	// Aggregates lists the aggregates covered, as runs of consecutive
	// seqs of one stream: "KID.EPOCH/FROM-TO" (or "KID.EPOCH/SEQ").
	Aggregates []string `json:"aggregates"`
	Count      uint64   `json:"aggregate_count"`
	// Gaps are the streams that missed aggregates when the payout was made
	// (only with on_gap: pay): what they miss is paid when it arrives.
	Gaps []string `json:"gaps,omitempty"`
}

// PayeeShare is one payee's part of a payout, in nanos and in the
// currency's minor units.
type PayeeShare struct {
	ID     string         `json:"id"`
	Amount metering.Nanos `json:"amount_nanos"`
	Minor  int64          `json:"amount_minor_units"`
}

// RunPayouts pays out, for each provider with a policy, the wallet that
// reached its threshold: the aggregates booked and not yet paid, plus
// what the last payout carried. Each payout is one transaction — the
// payout, its aggregates leaving the wallet and the new carry commit
// together — so running again, or after a crash, pays nothing twice.
func (r *Receiver) RunPayouts(ctx context.Context, policies map[string]PayoutPolicy, now time.Time) ([]Payout, error) {
	return r.countPayouts(r.books.RunPayouts(ctx, policies, now, false))
}

// countPayouts counts a run's payouts, or its failure, in the stats.
func (r *Receiver) countPayouts(made []Payout, err error) ([]Payout, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Payouts += uint64(len(made))
	if err != nil {
		r.stats.PayoutFailures++
	}
	return made, err
}

// RunDuePayouts is RunPayouts for the providers whose schedule calls for
// a payout at now: at their threshold, or at their daily time since the
// last one considered (recorded with the payout, so a restart does not
// pay a day twice). A provider due at its daily time whose wallet is
// below the threshold waits for the next day's.
func (r *Receiver) RunDuePayouts(ctx context.Context, policies map[string]PayoutPolicy, now time.Time) ([]Payout, error) {
	return r.countPayouts(r.books.RunPayouts(ctx, policies, now, true))
}

// RunPayouts makes the payouts policies call for (scheduled: only those
// due at now), each provider's in one transaction, in provider order.
func (bb boltBooks) RunPayouts(_ context.Context, policies map[string]PayoutPolicy, now time.Time, scheduled bool) ([]Payout, error) {
	return EachPayout(policies, func(pol PayoutPolicy) (p *Payout, err error) {
		err = bb.db.Update(func(tx *bolt.Tx) error {
			if scheduled {
				due, err := dueAt(tx, pol, now)
				if err != nil || !due {
					return err
				}
			}
			var err error
			p, err = payOut(tx, pol, now)
			return err
		})
		return p, err
	})
}

// EachPayout runs one provider's payout (nil: none due) for each policy,
// in provider order, each in its own transaction, and returns those made;
// the first error stops the run, naming its provider. Every Books'
// RunPayouts is this loop around its own transaction.
func EachPayout(policies map[string]PayoutPolicy, one func(PayoutPolicy) (*Payout, error)) ([]Payout, error) {
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	sort.Strings(names)
	var made []Payout
	for _, name := range names {
		p, err := one(policies[name])
		if err != nil {
			return made, fmt.Errorf("provider %s: %w", name, err)
		}
		if p != nil {
			made = append(made, *p)
		}
	}
	return made, nil
}

// dueAt tells whether pol's schedule calls for a payout at now, and
// records a daily time as considered.
func dueAt(tx *bolt.Tx, pol PayoutPolicy, now time.Time) (bool, error) {
	sc, err := ParseSchedule(pol.Schedule)
	if err != nil {
		return false, err
	}
	if !sc.Daily {
		return sc.Threshold, nil
	}
	slot := sc.LastSlot(now).Unix()
	b := tx.Bucket(bucketPayoutSlot)
	if v := b.Get([]byte(pol.Provider)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= slot {
		return sc.Threshold, nil // this day's time was considered already
	}
	return true, b.Put([]byte(pol.Provider), binary.BigEndian.AppendUint64(nil, uint64(slot)))
}

// payOut makes one provider's payout, if its wallet reached the threshold.
func payOut(tx *bolt.Tx, pol PayoutPolicy, now time.Time) (*Payout, error) {
	th, _, err := pol.Compile()
	if err != nil {
		return nil, err
	}
	meta := tx.Bucket(bucketPayoutMeta)
	number, carry := uint64(0), metering.Nanos(0)
	if v := meta.Get([]byte(pol.Provider)); len(v) >= 16 {
		number, carry = binary.BigEndian.Uint64(v), metering.Nanos(binary.BigEndian.Uint64(v[8:]))
		if string(v[16:]) != string(th.Currency) {
			return nil, fmt.Errorf("%w: the wallet is in %s, the policy in %s", ErrPolicy, v[16:], th.Currency)
		}
	}
	prefix := []byte(pol.Provider + "\x00" + string(th.Currency) + "\x00")
	var keys [][]byte
	var unpaid []UnpaidAggregate
	c := tx.Bucket(bucketUnpaid).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) != 8 {
			continue
		}
		sk := k[len(prefix):]
		keys = append(keys, append([]byte(nil), k...))
		unpaid = append(unpaid, UnpaidAggregate{Stream: streamOfKey(sk), Seq: binary.BigEndian.Uint64(sk[protocol.KeyIDLen+8:]),
			Amount: binary.BigEndian.Uint64(v)})
	}
	p, err := PlanPayout(pol, WalletState{Number: number, Carry: carry}, unpaid, streamGaps(tx, keys, len(prefix)), now)
	if p == nil || err != nil {
		return nil, err
	}
	up := tx.Bucket(bucketUnpaid)
	for _, k := range keys {
		if err := up.Delete(k); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	pk := binary.BigEndian.AppendUint64([]byte(pol.Provider+"\x00"), p.Number)
	if err := tx.Bucket(bucketPayouts).Put(pk, b); err != nil {
		return nil, err
	}
	mv := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, p.Number), uint64(p.CarryOut))
	return p, meta.Put([]byte(pol.Provider), append(mv, th.Currency...))
}

// WalletState is what a provider's wallet keeps between payouts: the
// number of its last payout and what it carried out of it.
type WalletState struct {
	Number uint64
	Carry  metering.Nanos
}

// UnpaidAggregate is one aggregate in a provider's wallet, not paid out yet.
type UnpaidAggregate struct {
	Stream protocol.StreamID
	Seq    uint64
	Amount uint64
}

// PlanPayout is the payout of a wallet holding carry and unpaid (in
// stream, then seq order), the provider's payout number before it, and the
// streams of the wallet that miss an aggregate; nil while the wallet is
// below the threshold, or waits on a gap. No I/O: both books use it.
func PlanPayout(pol PayoutPolicy, w WalletState, unpaid []UnpaidAggregate, gaps []string, now time.Time) (*Payout, error) {
	number, carry := w.Number, w.Carry
	th, fee, err := pol.Compile()
	if err != nil {
		return nil, err
	}
	var fresh metering.Nanos
	for _, u := range unpaid {
		if fresh, err = fresh.Add(metering.Nanos(u.Amount)); err != nil {
			return nil, err
		}
	}
	gross, err := fresh.Add(carry)
	if err != nil {
		return nil, err
	}
	if len(unpaid) == 0 || gross < th.Nanos {
		return nil, nil // pending: below the threshold
	}
	if len(gaps) > 0 && pol.OnGap != "pay" {
		return nil, nil // waiting: a stream feeding the wallet misses an aggregate
	}
	weights := make([]uint64, len(pol.Payees))
	for i, w := range pol.Payees {
		weights[i] = w.Weight
	}
	s, err := metering.SplitPayout(fresh, carry, th.Currency, fee, weights)
	if err != nil {
		return nil, err
	}
	unit := int64(th.Currency.MinorUnit())
	p := &Payout{Provider: pol.Provider, Number: number + 1, Time: now.UnixMilli(), Currency: string(th.Currency),
		CarryIn: carry, Gross: gross, Fee: s.Fee, CarryOut: s.CarryOut, Gaps: gaps}
	for i, w := range pol.Payees {
		p.Payees = append(p.Payees, PayeeShare{ID: w.ID, Amount: s.Payees[i], Minor: int64(s.Payees[i]) / unit})
	}
	var run struct {
		stream   string
		from, to uint64
	}
	flush := func() {
		if run.stream == "" {
			return
		}
		r := run.stream + "/" + fmt.Sprint(run.from)
		if run.to != run.from {
			r += "-" + fmt.Sprint(run.to)
		}
		p.Aggregates = append(p.Aggregates, r)
	}
	for _, u := range unpaid {
		stream := u.Stream.String()
		if stream == run.stream && u.Seq == run.to+1 {
			run.to = u.Seq
		} else {
			flush()
			run.stream, run.from, run.to = stream, u.Seq, u.Seq
		}
	}
	flush()
	p.Count = uint64(len(unpaid))
	return p, nil
}

// Payouts lists the payouts made, by provider and number.
func (r *Receiver) Payouts(ctx context.Context) ([]Payout, error) { return r.books.Payouts(ctx) }

// Payouts lists the payouts made, by provider and number.
func (bb boltBooks) Payouts(context.Context) ([]Payout, error) {
	var out []Payout
	err := bb.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPayouts).ForEach(func(_, v []byte) error {
			var p Payout
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// Wallet is one provider's money at the receiver: Received = Paid + Fees
// + Carried + Pending, to the nano.
type Wallet struct {
	Provider string         `json:"provider"`
	Currency string         `json:"currency"`
	Received metering.Nanos `json:"received_nanos"` // every aggregate booked
	Paid     metering.Nanos `json:"paid_to_payees_nanos"`
	Fees     metering.Nanos `json:"platform_fees_nanos"`
	Carried  metering.Nanos `json:"carried_nanos"`
	Pending  metering.Nanos `json:"pending_nanos"` // booked, not yet in a payout
	Payouts  uint64         `json:"payouts"`
	Balanced bool           `json:"balanced"`
}

// Wallets reconciles each provider's wallet in one transaction.
func (r *Receiver) Wallets(ctx context.Context) ([]Wallet, error) { return r.books.Wallets(ctx) }

// Wallets reconciles each provider's wallet in one transaction.
func (bb boltBooks) Wallets(context.Context) ([]Wallet, error) {
	ws := WalletBook{}
	get := ws.Get
	err := bb.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
			parts := bytes.SplitN(k, []byte{0}, 3)
			if len(parts) == 3 {
				w := get(string(parts[0]))
				w.Received += metering.Nanos(decodeTotal(v).Amount)
				w.Currency = string(parts[2])
			}
			return nil
		})
		tx.Bucket(bucketUnpaid).ForEach(func(k, v []byte) error {
			if i := bytes.IndexByte(k, 0); i > 0 && len(v) == 8 {
				get(string(k[:i])).Pending += metering.Nanos(binary.BigEndian.Uint64(v))
			}
			return nil
		})
		tx.Bucket(bucketPayoutMeta).ForEach(func(k, v []byte) error {
			if len(v) >= 16 {
				get(string(k)).Carried = metering.Nanos(binary.BigEndian.Uint64(v[8:]))
			}
			return nil
		})
		return tx.Bucket(bucketPayouts).ForEach(func(_, v []byte) error { return ws.AddPayout(v) })
	})
	return ws.List(), err
}

// WalletBook gathers the providers' wallets while the books are read.
type WalletBook map[string]*Wallet

func (wb WalletBook) Get(provider string) *Wallet {
	if wb[provider] == nil {
		wb[provider] = &Wallet{Provider: provider}
	}
	return wb[provider]
}

// addPayout counts a payout record (JSON) into its provider's wallet.
func (wb WalletBook) AddPayout(b []byte) error {
	var p Payout
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	w := wb.Get(p.Provider)
	w.Fees += p.Fee
	w.Payouts++
	for _, s := range p.Payees {
		w.Paid += s.Amount
	}
	return nil
}

// list returns the wallets by provider, each checked: Received = Paid +
// Fees + Carried + Pending.
func (wb WalletBook) List() []Wallet {
	var out []Wallet
	for _, w := range wb {
		w.Balanced = w.Received == w.Paid+w.Fees+w.Carried+w.Pending
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Provider < out[j].Provider })
	return out
}

// streamGaps returns the streams of the wallet's aggregates (keys, each
// prefixed by n bytes) that miss an aggregate below their highest seq.
func streamGaps(tx *bolt.Tx, keys [][]byte, n int) []string {
	seen := map[string]bool{}
	var gaps []string
	sb := tx.Bucket(bucketStreams)
	for _, k := range keys {
		sk := string(k[n : n+protocol.KeyIDLen+8])
		if seen[sk] {
			continue
		}
		seen[sk] = true
		if rec, ok := decodeStream(sb.Get([]byte(sk))); ok && rec.High > rec.Count {
			gaps = append(gaps, streamOfKey([]byte(sk)).String())
		}
	}
	sort.Strings(gaps)
	return gaps
}
