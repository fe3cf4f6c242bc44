// Package provider is the provider's side of Farthing, for a provider's
// own Go service to import: it takes aggregates from gateways (MQTT, a
// JetStream durable consumer, or HTTP), checks each against the gateway
// keys it trusts, books each aggregate exactly once, and keeps
// per-provider, per-account totals in its own bbolt file. `farthing
// receive` is a thin command around it.
//
// The books are keyed by aggregate stream — the signing key's id and the
// stream epoch (protocol.StreamID) — and seq, never by the gateway id
// alone. Each trusted key speaks for one gateway id: the one given with
// it, or else the first it was seen with, recorded in the file.
//
// Every aggregate ends in one of these, each counted and, where it is not
// plain, logged by the transport and kept in the file for the report:
//
//   - booked: new (stream, seq), signature good;
//   - duplicate: the same bytes again (a resend); nothing booked twice;
//   - conflict (ErrConflict): a (stream, seq) already booked with other
//     bytes, validly signed; kept aside in the held list, never booked;
//   - wrong gateway (ErrWrongGateway): validly signed, but naming another
//     gateway id than its key is bound to; held, never booked;
//   - refused (ErrUntrusted, ErrInvalid): not signed by a trusted key, or
//     not a valid aggregate; nothing in it can be trusted, so nothing kept.
//
// A new epoch from a key seen before is a stream reset: the gateway lost or
// replaced its state file. Its aggregates are booked; the reset is
// reported with the last seq of the epoch before it.
package provider

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// Buckets of the receiver's file. kid is 8 bytes, epoch and seq 8 bytes
// big-endian, so keys sort by stream, then seq.
//
//	booked    kid epoch seq → the aggregate's bytes, as booked
//	streams   kid epoch → streamRecord: gateway id, highest seq, count, the reset it began with
//	latest    kid → epoch of the key's newest stream (to tell a reset)
//	bindings  kid → gateway id the key speaks for
//	held      kid epoch seq hash(8) → reason(1) unix ms(8) the aggregate's bytes
//	totals    provider 0 account 0 currency → totals record
//	credits   account 0 currency 0 kind → credit totals: amount(8) count(8)
//	vouchers  voucher id → kid epoch seq of the credit that first named it
//	doubles   voucher id 0 kid epoch seq → kid epoch seq of the first: a voucher credited twice
//
// A file from before streams has "seen" (gateway 0 seq → bytes) and
// "high"; Open moves "seen" into "booked" once, keeping the totals.
var (
	bucketBooked   = []byte("booked")
	bucketStreams  = []byte("streams")
	bucketLatest   = []byte("latest")
	bucketBindings = []byte("bindings")
	bucketHeld     = []byte("held")
	bucketTotals   = []byte("totals")
	bucketCredits  = []byte("credits")
	bucketVouchers = []byte("vouchers")
	bucketDoubles  = []byte("doubles")
	bucketHolds    = []byte("quarantine")
	// bucketPaywords: provider 0 account 0 meter → usage proven by payword
	// chains (quantity, records), each record checked on its own.
	bucketPaywords = []byte("paywords")
	// bucketPaywordClaims: kid epoch seq of an aggregate → its PaywordClaim
	// while it is not reconciled (deleted once it is).
	bucketPaywordClaims = []byte("paywordclaims")
	// bucketPaywordChains: device 0 chain id → the highest index its
	// progress records proved (4 bytes) and its payword.
	bucketPaywordChains = []byte("paywordchains")

	legacySeen = []byte("seen")
	legacyHigh = []byte("high")
)

// Errors a refused aggregate gets.
var (
	// ErrUntrusted: the signing key is not one the receiver trusts.
	ErrUntrusted = errors.New("receiver: aggregate from a gateway key not trusted")
	// ErrInvalid: not a well-formed aggregate, or a bad signature.
	ErrInvalid = errors.New("receiver: invalid aggregate")
	// ErrConflict: the aggregate's (stream, seq) is booked already with
	// other bytes. The aggregate is held, not booked.
	ErrConflict = errors.New("receiver: conflicting aggregate: this stream and seq are booked with other bytes")
	// ErrWrongGateway: the aggregate names another gateway id than the one
	// its key is bound to. The aggregate is held, not booked.
	ErrWrongGateway = errors.New("receiver: aggregate names another gateway than its key is bound to")
)

// Refused reports whether err is a final answer about the aggregate (it
// will never be booked, however often it comes again), as opposed to a
// failure of the receiver's own storage.
func Refused(err error) bool {
	return errors.Is(err, ErrUntrusted) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) || errors.Is(err, ErrWrongGateway)
}

// Outcome of one aggregate that was not refused.
type Outcome int

// Outcomes.
const (
	// Accepted: booked now.
	Accepted Outcome = iota
	// Duplicate: booked before with the same bytes; nothing booked now.
	Duplicate
	// PaywordUnproven: a chain progress record whose paywords do not prove
	// its usage: its seq is booked, the record held, its usage counted
	// nowhere.
	PaywordUnproven
)

// Booking is what Accept did with an aggregate.
type Booking struct {
	Outcome   Outcome
	Aggregate *protocol.Aggregate     // for an aggregate
	Credit    *protocol.Credit        // for a credit record (a top-up or a voucher)
	Hold      *protocol.Hold          // for a hold record (a ticket held, released or voided)
	Progress  *protocol.ChainProgress // for a chain progress record
	Ack       *protocol.CommandAck    // for a gateway's answer to a command
	Payword   *PaywordUsage           // the usage its paywords prove (checked here)
	// Unproven says why a chain progress record is held (PaywordUnproven).
	Unproven string
	Stream   protocol.StreamID
	// ResetFrom is set when the aggregate began a new epoch of a key seen
	// before: the epoch it replaced and that epoch's highest seq.
	ResetFrom *Reset
	// DoubleRedemption is set when a voucher credit names a voucher
	// credited before (at another gateway, or in another stream): where it
	// was (stream/seq). The credit is booked — the gateway granted it —
	// and flagged.
	DoubleRedemption string
	// Restore is set for a restore record; Restored says what it took out
	// of the payable books.
	Restore  *protocol.Restore
	Restored *RestoreEffect
	// Superseded is set for a record of a stream a restore superseded,
	// numbered after its cut: booked, never payable.
	Superseded *Superseded
}

// HoldReason says why a record is held, not booked: as kept in the books
// and reported (String).
type HoldReason byte

// Hold reasons.
const (
	// HoldConflict: a (stream, seq) booked before with other bytes.
	HoldConflict HoldReason = 1
	// HoldWrongGateway: the key speaks for another gateway id.
	HoldWrongGateway HoldReason = 2
	// HoldPaywordUnproven: a chain progress record whose paywords do not
	// prove its usage. Its seq is booked (the stream has no gap); its
	// usage is counted nowhere.
	HoldPaywordUnproven HoldReason = 3
)

// String is the reason's name in reports ("conflict", …).
func (r HoldReason) String() string {
	switch r {
	case HoldConflict:
		return "conflict"
	case HoldWrongGateway:
		return "wrong_gateway"
	case HoldPaywordUnproven:
		return "payword_unproven"
	}
	return "unknown"
}

// Trust is one gateway key the receiver accepts aggregates from.
type Trust struct {
	Key ed25519.PublicKey
	// Gateway is the gateway id the key speaks for; "" binds the key to the
	// first gateway id it is seen with.
	Gateway string
}

// Keys trusts each key, each bound on first use.
func Keys(keys ...ed25519.PublicKey) []Trust {
	t := make([]Trust, len(keys))
	for i, k := range keys {
		t[i].Key = k
	}
	return t
}

type trusted struct {
	v       *strict.Ed25519Verifier
	gateway string // configured binding; "" if bound on first use
}

// Receiver keeps the books of received aggregates.
type Receiver struct {
	books   Books
	trust   map[string]trusted                 // by kid
	devices map[string]*strict.Ed25519Verifier // payword devices' own keys, by device id (TrustDevices)
	fleet   *Fleet                             // the control channel; nil when off (SetFleet)

	mu    sync.Mutex // guards stats
	stats Stats
}

// Stats count what came in since Open.
type Stats struct {
	Accepted     uint64 `json:"accepted"`
	Duplicates   uint64 `json:"duplicates"`
	Conflicts    uint64 `json:"conflicts"`
	WrongGateway uint64 `json:"wrong_gateway"`
	Resets       uint64 `json:"stream_resets"`
	Credits      uint64 `json:"credits"`
	// Holds counts hold records: tickets a gateway held, released or voided.
	Holds uint64 `json:"holds"`
	// DoubleRedemptions counts voucher credits whose voucher was credited before.
	DoubleRedemptions uint64 `json:"double_redemptions"`
	// CommandAcks counts gateways' answers to commands booked; of them,
	// CommandRefusals the refusals and LocalChanges the changes made by
	// hand at a gateway.
	CommandAcks     uint64 `json:"command_acks"`
	CommandRefusals uint64 `json:"command_refusals"`
	LocalChanges    uint64 `json:"local_changes"`
	// Paywords counts chain progress records whose usage the receiver
	// proved itself; UnprovenPaywords those it could not (held).
	Paywords         uint64 `json:"paywords"`
	UnprovenPaywords uint64 `json:"unproven_paywords"`
	// UnattestedPaywords counts the proven ones whose commitment no
	// device key checked (TrustDevices has none for the device).
	UnattestedPaywords uint64 `json:"unattested_paywords"`
	Refused            uint64 `json:"refused"`
	// Restores counts restore records booked; Superseded the records
	// (aggregates and credits) they took out of the payable books.
	Restores   uint64 `json:"restores"`
	Superseded uint64 `json:"superseded_by_restore"`
	// ReadsRefused counts reads of the books over HTTP (GET /totals)
	// refused for want of the read token.
	ReadsRefused uint64 `json:"reads_refused"`
	// Payouts counts payouts made since start; PayoutFailures the runs of
	// payouts that stopped on an error.
	Payouts        uint64 `json:"payouts"`
	PayoutFailures uint64 `json:"payout_failures"`
}

// NewReceiver returns a receiver that books in books (a backend's, such
// as provider/pgbooks; Open makes one on the embedded file) and trusts
// these gateway keys.
func NewReceiver(books Books, trust []Trust) (*Receiver, error) {
	r, err := newReceiver(trust)
	if err != nil {
		return nil, err
	}
	r.books = books
	return r, nil
}

// newReceiver is a receiver trusting these keys, without its books.
func newReceiver(trust []Trust) (*Receiver, error) {
	r := &Receiver{trust: map[string]trusted{}}
	for _, t := range trust {
		v, err := strict.NewEd25519Verifier(t.Key)
		if err != nil {
			return nil, err
		}
		if t.Gateway != "" && !protocol.ValidName(t.Gateway, protocol.MaxDeviceIDLen) {
			return nil, fmt.Errorf("receiver: gateway id %q: use 1..64 of [A-Za-z0-9._-]", t.Gateway)
		}
		r.trust[string(v.KeyID())] = trusted{v: v, gateway: t.Gateway}
	}
	return r, nil
}

// TrustDevices gives the receiver payword devices' own Ed25519 public
// keys, by device id. A chain progress record of such a device is proven
// only if its commitment verifies with the key (the gateway cannot have
// made it); one of a device without a key here is proven from its
// paywords alone and counted as unattested. Call it before Accept.
func (r *Receiver) TrustDevices(keys map[string]ed25519.PublicKey) error {
	r.devices = make(map[string]*strict.Ed25519Verifier, len(keys))
	for id, k := range keys {
		if !protocol.ValidName(id, protocol.MaxDeviceIDLen) {
			return fmt.Errorf("receiver: device id %q: use 1..64 of [A-Za-z0-9._-]", id)
		}
		v, err := strict.NewEd25519Verifier(k)
		if err != nil {
			return fmt.Errorf("receiver: device %s: %w", id, err)
		}
		r.devices[id] = v
	}
	return nil
}

// Books is where a receiver Books: the embedded bbolt file (Open) or
// PostgreSQL (OpenPostgres). book commits before it returns.
type Books interface {
	Book(ctx context.Context, s protocol.StreamID, rec Record, b []byte) (BookResult, error)
	Report(ctx context.Context) (*Report, error)
	// OpenClaims counts the payword claims not reconciled.
	OpenClaims(ctx context.Context) (int, error)
	// EachBooked calls fn with the bytes of every record booked.
	EachBooked(ctx context.Context, fn func(b []byte) error) error
	// RunPayouts makes the payouts policies call for (scheduled: only the
	// providers due at now), each in one transaction; Payouts lists those
	// made; Wallets reconciles each provider's wallet.
	RunPayouts(ctx context.Context, policies map[string]PayoutPolicy, now time.Time, scheduled bool) ([]Payout, error)
	Payouts(ctx context.Context) ([]Payout, error)
	Wallets(ctx context.Context) ([]Wallet, error)
	// PushCommand numbers a command next in target's sequence (by
	// protocol.CommandTarget.Key) and keeps it as sign makes it, in one
	// commit; an id pushed before is ErrCommandID.
	PushCommand(ctx context.Context, target, id string, sign func(seq uint64) ([]byte, error)) (uint64, error)
	// CommandsAfter returns target's commands after seq after, in order,
	// at most limit.
	CommandsAfter(ctx context.Context, target string, after uint64, limit int) ([][]byte, error)
	// CommandLog returns every command pushed, by target then seq.
	CommandLog(ctx context.Context) ([][]byte, error)
	// Acks returns the latest acknowledgement of each command by each
	// gateway (and the local changes gateways reported).
	Acks(ctx context.Context) ([]protocol.CommandAck, error)
	Close() error
}

// OpenPaywordClaims counts the aggregates whose payword quantity is not
// reconciled (Report.PaywordClaims lists them), cheaply enough for every
// metrics scrape. A count that stays above zero is payword usage
// charged without the devices' proof, or proof of usage no aggregate
// charged.
func (r *Receiver) OpenPaywordClaims() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.books.OpenClaims(ctx)
}

// Close closes the books.
func (r *Receiver) Close() error { return r.books.Close() }

// Accept checks and books one record (an aggregate, a credit, a hold or
// a chain progress record). It is durable when it returns (bbolt commits
// with fsync; PostgreSQL commits), so a transport may acknowledge then;
// that includes a conflict or a wrong gateway, whose record is held in the
// books. An error for which Refused is false is the receiver's own
// failure (the books could not commit before ctx ended, say): the record
// should come again.
func (r *Receiver) Accept(ctx context.Context, b []byte) (Booking, error) {
	m, err := strict.Decode(b)
	if err == nil && m.Kind != protocol.KindAggregate && m.Kind != protocol.KindCredit && m.Kind != protocol.KindHold &&
		m.Kind != protocol.KindChainProgress && m.Kind != protocol.KindRestore && m.Kind != protocol.KindCommandAck {
		err = fmt.Errorf("a %s, not an aggregate, a credit, a hold, a chain progress, a restore record or a command acknowledgement", m.Kind)
	}
	if err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return Booking{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rec := RecordOf(m)
	bk := Booking{Aggregate: m.Aggregate, Credit: m.Credit, Hold: m.Hold, Progress: m.Progress, Restore: m.Restore, Ack: m.CommandAck}
	env := m.Envelope
	t, ok := r.trust[string(env.KeyID)]
	if !ok {
		r.count(func(s *Stats) { s.Refused++ })
		return bk, fmt.Errorf("%w: kid %x (gateway %s)", ErrUntrusted, env.KeyID, rec.Gateway)
	}
	if err := env.Verify(t.v, nil); err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return bk, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if rec.Progress != nil {
		bk.Payword = r.checkProgress(&rec)
	}
	s, _ := protocol.StreamOf(env.KeyID, rec.Epoch) // a trusted kid has the length
	bk.Stream = s
	a := rec // the stream fields, for the messages below
	res, err := r.books.Book(ctx, s, rec, b)
	if err != nil {
		return bk, fmt.Errorf("receiver: store: %w", err)
	}
	r.countBooking(&rec, &res)
	switch res.Held {
	case HoldConflict:
		return bk, fmt.Errorf("%w: stream %s seq %d (gateway %s); held for review", ErrConflict, s, a.Seq, a.Gateway)
	case HoldWrongGateway:
		return bk, fmt.Errorf("%w: key %x speaks for gateway %q, the record says %q; held for review", ErrWrongGateway, s.KeyID, res.Bound, a.Gateway)
	}
	if res.Held == HoldPaywordUnproven {
		bk.Outcome, bk.Unproven = PaywordUnproven, res.Why
	}
	if res.Duplicate {
		bk.Outcome = Duplicate
	}
	bk.ResetFrom, bk.DoubleRedemption, bk.Superseded, bk.Restored = res.Reset, res.Double, res.Superseded, res.Restore
	return bk, nil
}

// checkProgress proves the usage a chain progress record claims from its
// paywords and the device's commitment alone: the gateway's signature
// says only that the gateway sent it. The commitment is checked here, the
// hashes in the books, against the chain's last proven payword
// (proveBolt, pgbooks' pgProve).
func (r *Receiver) checkProgress(rec *Record) *PaywordUsage {
	p := rec.Progress
	rec.Proof = PaywordProof{Commitment: p.Commitment, From: p.From, FromWord: p.FromWord, To: p.To, ToWord: p.ToWord}
	u, c, err := checkProof(rec.Proof, func(device string) protocol.Verifier {
		if v, ok := r.devices[device]; ok {
			return v
		}
		return nil
	})
	rec.Usage, rec.Commitment, rec.Unproven = &u, &c, err
	return &u
}

// countBooking counts what booking rec did in the receiver's stats.
func (r *Receiver) countBooking(rec *Record, res *BookResult) {
	r.count(func(st *Stats) {
		switch {
		case res.Held == HoldConflict:
			st.Conflicts++
		case res.Held == HoldWrongGateway:
			st.WrongGateway++
		case res.Held == HoldPaywordUnproven:
			st.UnprovenPaywords++
		case res.Duplicate:
			st.Duplicates++
		default:
			st.Accepted++
			if res.Reset != nil {
				st.Resets++
			}
			if rec.Credit != nil {
				st.Credits++
			}
			if rec.Hold != nil {
				st.Holds++
			}
			if a := rec.Ack; a != nil {
				st.CommandAcks++
				if a.Refused {
					st.CommandRefusals++
				}
				if a.Local {
					st.LocalChanges++
				}
			}
			if res.Double != "" {
				st.DoubleRedemptions++
			}
			if res.Restore != nil {
				st.Restores++
				for _, m := range res.Restore.Money {
					st.Superseded += m.Count
				}
			}
			if res.Superseded != nil {
				st.Superseded++
			}
			if rec.Progress != nil && res.Held == 0 {
				st.Paywords++
				if !rec.Usage.Attested {
					st.UnattestedPaywords++
				}
			}
		}
	})
}

// Seq is the booked record's seq in its stream.
func (b Booking) Seq() uint64 {
	if b.Credit != nil {
		return b.Credit.Seq
	}
	if b.Hold != nil {
		return b.Hold.Seq
	}
	if b.Progress != nil {
		return b.Progress.Seq
	}
	if b.Restore != nil {
		return b.Restore.Seq
	}
	if b.Ack != nil {
		return b.Ack.Seq
	}
	if b.Aggregate != nil {
		return b.Aggregate.Seq
	}
	return 0
}

// Amount is the record's amount in nanos.
func (b Booking) Amount() uint64 {
	if b.Credit != nil {
		return b.Credit.Amount
	}
	if b.Aggregate != nil {
		return b.Aggregate.Amount
	}
	return 0
}

// Gateway is the gateway id the record names.
func (b Booking) Gateway() string {
	if b.Credit != nil {
		return b.Credit.Gateway
	}
	if b.Hold != nil {
		return b.Hold.Gateway
	}
	if b.Progress != nil {
		return b.Progress.Gateway
	}
	if b.Restore != nil {
		return b.Restore.Gateway
	}
	if b.Ack != nil {
		return b.Ack.Gateway
	}
	if b.Aggregate != nil {
		return b.Aggregate.Gateway
	}
	return ""
}

// Record is what a stream carries, an aggregate or a credit, seen by the
// fields the books need of either.
type Record struct {
	Gateway string
	Seq     uint64
	Epoch   uint64
	Agg     *protocol.Aggregate
	Credit  *protocol.Credit
	Hold    *protocol.Hold
	// A chain Progress record, and what checking its commitment found.
	Progress   *protocol.ChainProgress
	Proof      PaywordProof
	Commitment *protocol.Commitment
	Usage      *PaywordUsage
	Unproven   error
	Restore    *protocol.Restore
	// Ack is a gateway's answer to a command.
	Ack *protocol.CommandAck
}

func RecordOf(m *strict.Message) Record {
	if c := m.Credit; c != nil {
		return Record{Gateway: c.Gateway, Seq: c.Seq, Epoch: c.Epoch, Credit: c}
	}
	if h := m.Hold; h != nil {
		return Record{Gateway: h.Gateway, Seq: h.Seq, Epoch: h.Epoch, Hold: h}
	}
	if p := m.Progress; p != nil {
		return Record{Gateway: p.Gateway, Seq: p.Seq, Epoch: p.Epoch, Progress: p}
	}
	if r := m.Restore; r != nil {
		return Record{Gateway: r.Gateway, Seq: r.Seq, Epoch: r.Epoch, Restore: r}
	}
	if a := m.CommandAck; a != nil {
		return Record{Gateway: a.Gateway, Seq: a.Seq, Epoch: a.Epoch, Ack: a}
	}
	a := m.Aggregate
	return Record{Gateway: a.Gateway, Seq: a.Seq, Epoch: a.Epoch, Agg: a}
}

type BookResult struct {
	Double    string // a voucher credit whose voucher was credited before: where (stream/seq)
	Duplicate bool
	Reset     *Reset     // the aggregate began a new epoch of a known key
	Held      HoldReason // 0, or why the record is held
	Why       string     // why a chain progress record is held
	Bound     string     // the gateway id the key is bound to
	// Restore: what a restore record took out of the payable books.
	Restore *RestoreEffect
	// Superseded: the record is of a superseded stream, after its cut.
	Superseded *Superseded
}

func (r *Receiver) count(f func(*Stats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

// Stats returns the counters since Open.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Ping reports whether the books answer: the database's ping on
// PostgreSQL, always on the embedded file.
func (r *Receiver) Ping(ctx context.Context) error {
	if p, ok := r.books.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}
