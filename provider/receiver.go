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
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

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
}

// Hold reasons, as kept in the file and reported.
const (
	holdConflict     byte = 1
	holdWrongGateway byte = 2
	// holdPaywordUnproven: a chain progress record whose paywords do not
	// prove its usage. Its seq is booked (the stream has no gap); its
	// usage is counted nowhere.
	holdPaywordUnproven byte = 3
)

func holdReason(r byte) string {
	switch r {
	case holdConflict:
		return "conflict"
	case holdWrongGateway:
		return "wrong_gateway"
	case holdPaywordUnproven:
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
	books   books
	db      *bolt.DB                           // the embedded file's, for payouts and statements; nil on PostgreSQL
	trust   map[string]trusted                 // by kid
	devices map[string]*strict.Ed25519Verifier // payword devices' own keys, by device id (TrustDevices)

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
	// Paywords counts chain progress records whose usage the receiver
	// proved itself; UnprovenPaywords those it could not (held).
	Paywords         uint64 `json:"paywords"`
	UnprovenPaywords uint64 `json:"unproven_paywords"`
	// UnattestedPaywords counts the proven ones whose commitment no
	// device key checked (TrustDevices has none for the device).
	UnattestedPaywords uint64 `json:"unattested_paywords"`
	Refused            uint64 `json:"refused"`
}

// Open opens (or creates) the receiver's file and trusts these gateway
// keys.
func Open(path string, trust []Trust) (*Receiver, error) {
	r, err := newReceiver(trust)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("receiver: %s is in use by another process (a running farthing receive?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if err := db.Update(r.setUp); err != nil {
		db.Close()
		return nil, fmt.Errorf("receiver: %w", err)
	}
	r.db, r.books = db, boltBooks{db}
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

// books is where a receiver books: the embedded bbolt file (Open) or
// PostgreSQL (OpenPostgres). book commits before it returns.
type books interface {
	book(ctx context.Context, s protocol.StreamID, rec record, b []byte) (bookResult, error)
	report(ctx context.Context) (*Report, error)
	// openClaims counts the payword claims not reconciled.
	openClaims(ctx context.Context) (int, error)
	// eachBooked calls fn with the bytes of every record booked.
	eachBooked(ctx context.Context, fn func(b []byte) error) error
	close() error
}

// boltBooks are the books in the embedded file.
type boltBooks struct{ db *bolt.DB }

func (bb boltBooks) book(_ context.Context, s protocol.StreamID, rec record, b []byte) (bookResult, error) {
	var res bookResult
	err := bb.db.Update(func(tx *bolt.Tx) error {
		var err error
		res, err = book(tx, s, rec, b)
		return err
	})
	return res, err
}

func (bb boltBooks) close() error { return bb.db.Close() }

func (bb boltBooks) openClaims(context.Context) (int, error) {
	var n int
	err := bb.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketPaywordClaims).Stats().KeyN
		return nil
	})
	return n, err
}

// OpenPaywordClaims counts the aggregates whose payword quantity is not
// reconciled (Report.PaywordClaims lists them), cheaply enough for every
// metrics scrape. A count that stays above zero is payword usage
// charged without the devices' proof, or proof of usage no aggregate
// charged.
func (r *Receiver) OpenPaywordClaims() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.books.openClaims(ctx)
}

func (bb boltBooks) eachBooked(_ context.Context, fn func(b []byte) error) error {
	return bb.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBooked).ForEach(func(_, v []byte) error { return fn(v) })
	})
}

// setUp creates the buckets, moves a file from before streams to the
// stream layout, and checks configured bindings against recorded ones.
func (r *Receiver) setUp(tx *bolt.Tx) error {
	newUnpaid := tx.Bucket(bucketUnpaid) == nil
	for _, b := range [][]byte{bucketBooked, bucketStreams, bucketLatest, bucketBindings, bucketHeld, bucketTotals,
		bucketCredits, bucketVouchers, bucketDoubles, bucketHolds, bucketUnpaid, bucketPayouts, bucketPayoutMeta, bucketPayoutSlot, bucketPaywords,
		bucketPaywordClaims, bucketPaywordChains} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	if newUnpaid {
		// A file from before payouts: every aggregate booked is unpaid.
		if err := tx.Bucket(bucketBooked).ForEach(func(k, v []byte) error {
			if _, a, err := strict.DecodeAggregate(v); err == nil {
				return tx.Bucket(bucketUnpaid).Put(unpaidKey(&a, k), binary.BigEndian.AppendUint64(nil, a.Amount))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := migrateLegacy(tx); err != nil {
		return err
	}
	bind := tx.Bucket(bucketBindings)
	for kid, t := range r.trust {
		if t.gateway == "" {
			continue
		}
		if old := bind.Get([]byte(kid)); old != nil && string(old) != t.gateway {
			return fmt.Errorf("key %x is bound to gateway %q in this file, not %q", kid, old, t.gateway)
		}
		if err := bind.Put([]byte(kid), []byte(t.gateway)); err != nil {
			return err
		}
	}
	return nil
}

// migrateLegacy books the aggregates of a file from before streams into
// the stream layout (their totals are counted already) and drops the old
// buckets. Their signatures were checked when they were first booked.
func migrateLegacy(tx *bolt.Tx) error {
	seen := tx.Bucket(legacySeen)
	if seen == nil {
		return nil
	}
	err := seen.ForEach(func(_, b []byte) error {
		env, a, err := strict.DecodeAggregate(b)
		if err != nil {
			return nil // it could not have been booked
		}
		s, ok := protocol.StreamOf(env.KeyID, a.Epoch)
		if !ok {
			return nil
		}
		if err := tx.Bucket(bucketBindings).Put(s.KeyID[:], []byte(a.Gateway)); err != nil {
			return err
		}
		_, err = bookStream(tx, s, a.Gateway, a.Seq, b)
		return err
	})
	if err != nil {
		return err
	}
	if err := tx.DeleteBucket(legacySeen); err != nil {
		return err
	}
	if tx.Bucket(legacyHigh) != nil {
		return tx.DeleteBucket(legacyHigh)
	}
	return nil
}

// Close closes the books.
func (r *Receiver) Close() error { return r.books.close() }

// Accept checks and books one aggregate. It is durable when it returns
// (bbolt commits with fsync), so a transport may acknowledge then; that
// includes a conflict or a wrong gateway, whose aggregate is held in the
// file. An error for which Refused is false is the receiver's own failure:
// the aggregate should come again.
func (r *Receiver) Accept(b []byte) (Booking, error) {
	m, err := strict.Decode(b)
	if err == nil && m.Kind != protocol.KindAggregate && m.Kind != protocol.KindCredit && m.Kind != protocol.KindHold && m.Kind != protocol.KindChainProgress {
		err = fmt.Errorf("a %s, not an aggregate, a credit, a hold or a chain progress record", m.Kind)
	}
	if err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return Booking{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rec := recordOf(m)
	bk := Booking{Aggregate: m.Aggregate, Credit: m.Credit, Hold: m.Hold, Progress: m.Progress}
	env := m.Envelope
	t, ok := r.trust[string(env.KeyID)]
	if !ok {
		r.count(func(s *Stats) { s.Refused++ })
		return bk, fmt.Errorf("%w: kid %x (gateway %s)", ErrUntrusted, env.KeyID, rec.gateway)
	}
	if err := env.Verify(t.v, nil); err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return bk, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if p := rec.progress; p != nil {
		// The usage a chain progress record claims is proven from its
		// paywords and the device's commitment alone: the gateway's
		// signature above says only that the gateway sent it. The
		// commitment is checked here, the hashes in the books, against
		// the chain's last proven payword (proveBolt, pgProve).
		rec.proof = PaywordProof{Commitment: p.Commitment, From: p.From, FromWord: p.FromWord, To: p.To, ToWord: p.ToWord}
		u, c, err := checkProof(rec.proof, func(device string) protocol.Verifier {
			if v, ok := r.devices[device]; ok {
				return v
			}
			return nil
		})
		rec.usage, rec.commitment, rec.unproven = &u, &c, err
		bk.Payword = &u
	}
	s, _ := protocol.StreamOf(env.KeyID, rec.epoch) // a trusted kid has the length
	bk.Stream = s
	a := rec // the stream fields, for the messages below
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	res, err := r.books.book(ctx, s, rec, b)
	cancel()
	if err != nil {
		return bk, fmt.Errorf("receiver: store: %w", err)
	}
	r.count(func(st *Stats) {
		switch {
		case res.held == holdConflict:
			st.Conflicts++
		case res.held == holdWrongGateway:
			st.WrongGateway++
		case res.held == holdPaywordUnproven:
			st.UnprovenPaywords++
		case res.duplicate:
			st.Duplicates++
		default:
			st.Accepted++
			if res.reset != nil {
				st.Resets++
			}
			if rec.credit != nil {
				st.Credits++
			}
			if rec.hold != nil {
				st.Holds++
			}
			if res.double != "" {
				st.DoubleRedemptions++
			}
			if rec.progress != nil && res.held == 0 {
				st.Paywords++
				if !rec.usage.Attested {
					st.UnattestedPaywords++
				}
			}
		}
	})
	switch res.held {
	case holdConflict:
		return bk, fmt.Errorf("%w: stream %s seq %d (gateway %s); held for review", ErrConflict, s, a.seq, a.gateway)
	case holdWrongGateway:
		return bk, fmt.Errorf("%w: key %x speaks for gateway %q, the record says %q; held for review", ErrWrongGateway, s.KeyID, res.bound, a.gateway)
	}
	if res.held == holdPaywordUnproven {
		bk.Outcome, bk.Unproven = PaywordUnproven, res.why
	}
	if res.duplicate {
		bk.Outcome = Duplicate
	}
	bk.ResetFrom, bk.DoubleRedemption = res.reset, res.double
	return bk, nil
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
	if b.Aggregate != nil {
		return b.Aggregate.Gateway
	}
	return ""
}

// record is what a stream carries, an aggregate or a credit, seen by the
// fields the books need of either.
type record struct {
	gateway string
	seq     uint64
	epoch   uint64
	agg     *protocol.Aggregate
	credit  *protocol.Credit
	hold    *protocol.Hold
	// A chain progress record, and what checking its commitment found.
	progress   *protocol.ChainProgress
	proof      PaywordProof
	commitment *protocol.Commitment
	usage      *PaywordUsage
	unproven   error
}

func recordOf(m *strict.Message) record {
	if c := m.Credit; c != nil {
		return record{gateway: c.Gateway, seq: c.Seq, epoch: c.Epoch, credit: c}
	}
	if h := m.Hold; h != nil {
		return record{gateway: h.Gateway, seq: h.Seq, epoch: h.Epoch, hold: h}
	}
	if p := m.Progress; p != nil {
		return record{gateway: p.Gateway, seq: p.Seq, epoch: p.Epoch, progress: p}
	}
	a := m.Aggregate
	return record{gateway: a.Gateway, seq: a.Seq, epoch: a.Epoch, agg: a}
}

type bookResult struct {
	double    string // a voucher credit whose voucher was credited before: where (stream/seq)
	duplicate bool
	reset     *Reset // the aggregate began a new epoch of a known key
	held      byte   // 0 or the hold reason
	why       string // why a chain progress record is held
	bound     string // the gateway id the key is bound to
}

// book is Accept's transaction: the identity checks, then the booking.
func book(tx *bolt.Tx, s protocol.StreamID, rec record, b []byte) (bookResult, error) {
	var res bookResult
	bind := tx.Bucket(bucketBindings)
	bound := bind.Get(s.KeyID[:])
	switch {
	case bound == nil:
		if err := bind.Put(s.KeyID[:], []byte(rec.gateway)); err != nil {
			return res, err
		}
	case string(bound) != rec.gateway:
		res.held, res.bound = holdWrongGateway, string(bound)
		return res, hold(tx, s, rec.seq, holdWrongGateway, b)
	}
	key := seqKey(s, rec.seq)
	if old := tx.Bucket(bucketBooked).Get(key); old != nil {
		if bytes.Equal(old, b) {
			res.duplicate = true
			return res, nil
		}
		res.held = holdConflict
		return res, hold(tx, s, rec.seq, holdConflict, b)
	}
	reset, err := bookStream(tx, s, rec.gateway, rec.seq, b)
	if err != nil {
		return res, err
	}
	res.reset = reset
	if rec.credit != nil {
		res.double, err = bookCredit(tx, key, rec.credit)
		return res, err
	}
	if rec.hold != nil {
		return res, bookHold(tx, rec.hold, b)
	}
	if rec.progress != nil {
		err := rec.unproven
		if err == nil {
			err = proveBolt(tx, s, &rec)
		}
		if errors.Is(err, ErrPayword) {
			res.held, res.why = holdPaywordUnproven, err.Error()
			return res, hold(tx, s, rec.seq, holdPaywordUnproven, b)
		}
		if err != nil {
			return res, err
		}
		return res, bookPayword(tx, rec.progress, rec.usage)
	}
	a := rec.agg
	if a.Proven > 0 {
		if err := claimBolt(tx, s, a); err != nil {
			return res, err
		}
	}
	if err := tx.Bucket(bucketUnpaid).Put(unpaidKey(a, key), binary.BigEndian.AppendUint64(nil, a.Amount)); err != nil {
		return res, err
	}
	tb := tx.Bucket(bucketTotals)
	tk := []byte(a.Provider + "\x00" + a.Account + "\x00" + a.Currency)
	t := decodeTotal(tb.Get(tk))
	var ok bool
	if t.Amount, ok = addU64(t.Amount, a.Amount); !ok {
		return res, fmt.Errorf("total of %s/%s overflows", a.Provider, a.Account)
	}
	if t.Quantity, ok = addU64(t.Quantity, a.Quantity); !ok {
		return res, fmt.Errorf("quantity of %s/%s overflows", a.Provider, a.Account)
	}
	t.Tickets += a.Tickets
	t.Aggregates++
	return res, tb.Put(tk, t.encode())
}

// bookPayword adds the usage a chain progress record proved to its
// provider's, account's and meter's payword total.
func bookPayword(tx *bolt.Tx, p *protocol.ChainProgress, u *PaywordUsage) error {
	return addPaywordTotal(tx, p.Provider, p.Account, u.Meter, func(t *PaywordTotal) bool {
		q, ok := addU64(t.Quantity, u.Quantity)
		t.Quantity, t.Records = q, t.Records+1
		if !u.Attested {
			t.Unattested += u.Quantity // <= Quantity: no overflow if it had none
		}
		return ok
	})
}

// addPaywordTotal changes one payword total in place; change reports
// false on an overflow. The value is quantity, records, claimed and
// unattested, 8 bytes each (a file from before claims has the first two).
func addPaywordTotal(tx *bolt.Tx, provider, account, meter string, change func(*PaywordTotal) bool) error {
	b := tx.Bucket(bucketPaywords)
	k := []byte(provider + "\x00" + account + "\x00" + meter)
	t := decodePaywordTotal(b.Get(k))
	if !change(&t) {
		return fmt.Errorf("payword total of %s/%s/%s overflows", provider, account, meter)
	}
	v := binary.BigEndian.AppendUint64(nil, t.Quantity)
	v = binary.BigEndian.AppendUint64(v, t.Records)
	v = binary.BigEndian.AppendUint64(v, t.Claimed)
	return b.Put(k, binary.BigEndian.AppendUint64(v, t.Unattested))
}

func decodePaywordTotal(v []byte) PaywordTotal {
	var t PaywordTotal
	if len(v) >= 16 {
		t.Quantity, t.Records = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	if len(v) == 32 {
		t.Claimed, t.Unattested = binary.BigEndian.Uint64(v[16:]), binary.BigEndian.Uint64(v[24:])
	}
	return t
}

// claimBolt books an aggregate's payword quantity into its claim and its
// total's claimed quantity.
func claimBolt(tx *bolt.Tx, s protocol.StreamID, a *protocol.Aggregate) error {
	if err := addPaywordTotal(tx, a.Provider, a.Account, a.Meter, func(t *PaywordTotal) bool {
		var ok bool
		t.Claimed, ok = addU64(t.Claimed, a.Proven)
		return ok
	}); err != nil {
		return err
	}
	b := tx.Bucket(bucketPaywordClaims)
	k := seqKey(s, a.Seq)
	c, err := decodeClaim(b.Get(k))
	if err != nil {
		return err
	}
	return putClaim(b, k, claimAggregate(c, a))
}

// proveBolt adds a verified progress record to its chain's proven index
// and its aggregate's claim; an error wrapping ErrPayword says why the
// record cannot be booked.
func proveBolt(tx *bolt.Tx, s protocol.StreamID, rec *record) error {
	p, u := rec.progress, rec.usage
	chains := tx.Bucket(bucketPaywordChains)
	ck := append(append([]byte(u.Device), 0), u.Chain[:]...)
	last := chains.Get(ck) // the highest index proven (4 bytes) and its payword
	var lastTo uint32
	lastWord := rec.commitment.Anchor
	if len(last) == 4+protocol.PaywordSize {
		lastTo = binary.BigEndian.Uint32(last)
		copy(lastWord[:], last[4:])
	}
	claims := tx.Bucket(bucketPaywordClaims)
	k := seqKey(s, p.Aggregate)
	c, err := decodeClaim(claims.Get(k))
	if err != nil {
		return err
	}
	booked := tx.Bucket(bucketBooked).Get(k) != nil
	c, linked, err := proveClaim(c, p, u, booked, lastTo, last != nil)
	if err != nil {
		return err
	}
	if err := walkProof(rec.commitment, &rec.proof, lastTo, lastWord); err != nil {
		return err
	}
	if err := chains.Put(ck, append(binary.BigEndian.AppendUint32(nil, p.To), p.ToWord[:]...)); err != nil {
		return err
	}
	if !linked {
		return nil
	}
	return putClaim(claims, k, c)
}

// putClaim writes a claim, or deletes it once it is reconciled.
func putClaim(b *bolt.Bucket, k []byte, c PaywordClaim) error {
	if c.Reconciled() {
		return b.Delete(k)
	}
	v := []byte(c.Provider + "\x00" + c.Account + "\x00" + c.Meter + "\x00")
	v = binary.BigEndian.AppendUint64(v, c.Claimed)
	v = binary.BigEndian.AppendUint64(v, c.Proven)
	v = binary.BigEndian.AppendUint64(v, c.Records)
	var flags byte
	if c.Booked {
		flags |= 1
	}
	if c.Foreign {
		flags |= 2
	}
	return b.Put(k, append(v, flags))
}

// decodeClaim reads what putClaim wrote; nil is no claim yet.
func decodeClaim(v []byte) (PaywordClaim, error) {
	var c PaywordClaim
	if v == nil {
		return c, nil
	}
	parts := bytes.SplitN(v, []byte{0}, 4)
	if len(parts) != 4 || len(parts[3]) != 25 {
		return c, fmt.Errorf("receiver: a payword claim of %d bytes", len(v))
	}
	c.Provider, c.Account, c.Meter = string(parts[0]), string(parts[1]), string(parts[2])
	n := parts[3]
	c.Claimed, c.Proven, c.Records = binary.BigEndian.Uint64(n), binary.BigEndian.Uint64(n[8:]), binary.BigEndian.Uint64(n[16:])
	c.Booked, c.Foreign = n[24]&1 != 0, n[24]&2 != 0
	return c, nil
}

func addU64(a, b uint64) (uint64, bool) {
	s := a + b
	return s, s >= a
}

// bookStream records a's bytes under its stream and seq and updates the
// stream's record; when a began a new epoch of a key seen before (a stream
// reset) it returns the epoch replaced.
func bookStream(tx *bolt.Tx, s protocol.StreamID, gateway string, seq uint64, b []byte) (*Reset, error) {
	if err := tx.Bucket(bucketBooked).Put(seqKey(s, seq), b); err != nil {
		return nil, err
	}
	sb := tx.Bucket(bucketStreams)
	sk := streamKey(s)
	rec, known := decodeStream(sb.Get(sk))
	var reset *Reset
	if !known {
		rec = streamRecord{Gateway: gateway, First: time.Now().UnixMilli()}
		lb := tx.Bucket(bucketLatest)
		if prev := lb.Get(s.KeyID[:]); len(prev) == 8 {
			p := s
			p.Epoch = binary.BigEndian.Uint64(prev)
			if old, ok := decodeStream(sb.Get(streamKey(p))); ok {
				rec.ResetFrom, rec.ResetFromLast, rec.Reset = p.Epoch, old.High, true
				reset = &Reset{Epoch: p.Epoch, LastSeq: old.High}
			}
		}
		if err := lb.Put(s.KeyID[:], binary.BigEndian.AppendUint64(nil, s.Epoch)); err != nil {
			return nil, err
		}
	}
	rec.High = max(rec.High, seq)
	rec.Count++
	return reset, sb.Put(sk, rec.encode())
}

// hold keeps an aggregate that cannot be booked, once per distinct bytes.
func hold(tx *bolt.Tx, s protocol.StreamID, seq uint64, reason byte, b []byte) error {
	h := sha256.Sum256(b)
	k := append(seqKey(s, seq), h[:8]...)
	hb := tx.Bucket(bucketHeld)
	if hb.Get(k) != nil {
		return nil
	}
	v := binary.BigEndian.AppendUint64([]byte{reason}, uint64(time.Now().UnixMilli()))
	return hb.Put(k, append(v, b...))
}

func streamKey(s protocol.StreamID) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), s.KeyID[:]...), s.Epoch)
}

func seqKey(s protocol.StreamID, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(streamKey(s), seq)
}

func streamOfKey(k []byte) protocol.StreamID {
	var s protocol.StreamID
	copy(s.KeyID[:], k[:protocol.KeyIDLen])
	s.Epoch = binary.BigEndian.Uint64(k[protocol.KeyIDLen:])
	return s
}

// streamRecord is what the receiver keeps per stream.
type streamRecord struct {
	Gateway       string
	High          uint64 // highest seq booked
	Count         uint64 // aggregates booked
	First         int64  // unix ms of the first booking
	Reset         bool   // the stream began as a reset of the key's epoch ResetFrom
	ResetFrom     uint64
	ResetFromLast uint64 // ResetFrom's highest seq when this stream began
}

func (r streamRecord) encode() []byte {
	b := make([]byte, 0, 42+len(r.Gateway))
	for _, v := range []uint64{r.High, r.Count, uint64(r.First), r.ResetFrom, r.ResetFromLast} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	flag := byte(0)
	if r.Reset {
		flag = 1
	}
	return append(append(b, flag), r.Gateway...)
}

func decodeStream(b []byte) (streamRecord, bool) {
	var r streamRecord
	if len(b) < 41 {
		return r, false
	}
	r.High, r.Count, r.First = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), int64(binary.BigEndian.Uint64(b[16:]))
	r.ResetFrom, r.ResetFromLast = binary.BigEndian.Uint64(b[24:]), binary.BigEndian.Uint64(b[32:])
	r.Reset, r.Gateway = b[40] == 1, string(b[41:])
	return r, true
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

func (t Total) encode() []byte {
	b := make([]byte, 0, 32)
	for _, v := range []uint64{t.Amount, t.Quantity, t.Tickets, t.Aggregates} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeTotal(b []byte) Total {
	var t Total
	if len(b) == 32 {
		t.Amount, t.Quantity = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
		t.Tickets, t.Aggregates = binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:])
	}
	return t
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
	Gaps  map[string][]uint64 `json:"gaps"`
	High  map[string]uint64   `json:"highest_seq"`
	Stats Stats               `json:"stats"`
}

// heldFields fills in who a held record is of, from its bytes: an
// aggregate's gateway, provider, account and amount, or a chain progress
// record's gateway, provider and account.
func heldFields(h *Held, b []byte) {
	if _, a, err := strict.DecodeAggregate(b); err == nil {
		h.Gateway, h.Provider, h.Account, h.Amount, h.Currency = a.Gateway, a.Provider, a.Account, a.Amount, a.Currency
	} else if m, err := strict.Decode(b); err == nil && m.Progress != nil {
		h.Gateway, h.Provider, h.Account = m.Progress.Gateway, m.Progress.Provider, m.Progress.Account
	}
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

// maxGaps bounds the seqs listed per stream.
const maxGaps = 1000

// Report reads the books in one transaction.
func (r *Receiver) Report() (*Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := r.books.report(ctx)
	if rep != nil {
		rep.Stats = r.Stats()
	}
	return rep, err
}

func (bb boltBooks) report(context.Context) (*Report, error) {
	rep := &Report{Gaps: map[string][]uint64{}, High: map[string]uint64{}}
	err := bb.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
			p := bytes.SplitN(k, []byte{0}, 3)
			if len(p) != 3 {
				return nil
			}
			t := decodeTotal(v)
			t.Provider, t.Account, t.Currency = string(p[0]), string(p[1]), string(p[2])
			rep.Totals = append(rep.Totals, t)
			return nil
		})
		booked := tx.Bucket(bucketBooked)
		tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			rec, ok := decodeStream(v)
			if !ok || len(k) != protocol.KeyIDLen+8 {
				return nil
			}
			s := streamOfKey(k)
			sr := StreamReport{Stream: s.String(), KeyID: hex.EncodeToString(s.KeyID[:]), Epoch: s.Epoch,
				Gateway: rec.Gateway, High: rec.High, Aggregates: rec.Count, Missing: rec.High - rec.Count}
			if rec.Reset {
				sr.ResetFrom = &Reset{Epoch: rec.ResetFrom, LastSeq: rec.ResetFromLast}
			}
			if sr.Missing > 0 {
				sr.Gaps = gaps(booked.Cursor(), k, rec.High)
			}
			rep.Streams = append(rep.Streams, sr)
			rep.High[sr.Stream] = sr.High
			rep.Gaps[sr.Stream] = sr.Gaps
			return nil
		})
		tx.Bucket(bucketCredits).ForEach(func(k, v []byte) error {
			p := bytes.SplitN(k, []byte{0}, 3)
			if len(p) == 3 && len(v) == 16 {
				rep.Credits = append(rep.Credits, CreditTotal{Account: string(p[0]), Currency: string(p[1]), Kind: string(p[2]),
					Amount: binary.BigEndian.Uint64(v), Count: binary.BigEndian.Uint64(v[8:])})
			}
			return nil
		})
		tx.Bucket(bucketDoubles).ForEach(func(k, v []byte) error {
			i := bytes.IndexByte(k, 0)
			if i < 0 || len(k) != i+1+protocol.KeyIDLen+16 || len(v) != protocol.KeyIDLen+16 {
				return nil
			}
			second := k[i+1:]
			rep.Doubles = append(rep.Doubles, DoubleRedemption{Voucher: string(k[:i]),
				First:  streamOfKey(v).Key(binary.BigEndian.Uint64(v[protocol.KeyIDLen+8:])),
				Second: streamOfKey(second).Key(binary.BigEndian.Uint64(second[protocol.KeyIDLen+8:]))})
			return nil
		})
		tx.Bucket(bucketHolds).ForEach(func(_, v []byte) error {
			if _, h, err := strict.DecodeHold(v); err == nil {
				rep.Quarantine = append(rep.Quarantine, h)
			}
			return nil
		})
		tx.Bucket(bucketPaywords).ForEach(func(k, v []byte) error {
			parts := bytes.Split(k, []byte{0})
			if len(parts) == 3 {
				t := decodePaywordTotal(v)
				t.Provider, t.Account, t.Meter = string(parts[0]), string(parts[1]), string(parts[2])
				rep.Paywords = append(rep.Paywords, t)
			}
			return nil
		})
		if err := tx.Bucket(bucketPaywordClaims).ForEach(func(k, v []byte) error {
			c, err := decodeClaim(v)
			if err != nil || len(k) != protocol.KeyIDLen+16 {
				return fmt.Errorf("receiver: payword claim %x: %v", k, err)
			}
			c.Stream = streamOfKey(k).Key(binary.BigEndian.Uint64(k[protocol.KeyIDLen+8:]))
			rep.PaywordClaims = append(rep.PaywordClaims, c)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketHeld).ForEach(func(k, v []byte) error {
			if len(k) != protocol.KeyIDLen+24 || len(v) < 9 {
				return nil
			}
			h := Held{Stream: streamOfKey(k).String(), Seq: binary.BigEndian.Uint64(k[protocol.KeyIDLen+8:]),
				Reason: holdReason(v[0]), At: int64(binary.BigEndian.Uint64(v[1:])), Bytes: hex.EncodeToString(v[9:])}
			heldFields(&h, v[9:])
			rep.Held = append(rep.Held, h)
			return nil
		})
	})
	sort.Slice(rep.Totals, func(i, j int) bool {
		a, b := rep.Totals[i], rep.Totals[j]
		return a.Provider+"\x00"+a.Account+"\x00"+a.Currency < b.Provider+"\x00"+b.Account+"\x00"+b.Currency
	})
	return rep, err
}

// gaps lists the first maxGaps seqs in 1..high not booked in the stream
// whose key is prefix.
func gaps(c *bolt.Cursor, prefix []byte, high uint64) []uint64 {
	var out []uint64
	want := uint64(1)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < maxGaps; k, _ = c.Next() {
		seq := binary.BigEndian.Uint64(k[len(prefix):])
		for ; want < seq && len(out) < maxGaps; want++ {
			out = append(out, want)
		}
		want = seq + 1
	}
	for ; want <= high && len(out) < maxGaps; want++ {
		out = append(out, want)
	}
	return out
}

// bookCredit adds a credit to the credit totals and, for a voucher,
// records where it was first credited; a voucher credited before returns
// where (stream/seq) and is recorded as a double redemption.
func bookCredit(tx *bolt.Tx, key []byte, c *protocol.Credit) (string, error) {
	cb := tx.Bucket(bucketCredits)
	ck := []byte(c.Account + "\x00" + c.Currency + "\x00" + c.Kind)
	var amount, count uint64
	if v := cb.Get(ck); len(v) == 16 {
		amount, count = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	var ok bool
	if amount, ok = addU64(amount, c.Amount); !ok {
		return "", fmt.Errorf("credits of %s overflow", c.Account)
	}
	if err := cb.Put(ck, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, amount), count+1)); err != nil {
		return "", err
	}
	if c.Kind != protocol.CreditVoucher {
		return "", nil
	}
	vb := tx.Bucket(bucketVouchers)
	first := vb.Get([]byte(c.Ref))
	if first == nil {
		return "", vb.Put([]byte(c.Ref), key)
	}
	where := streamOfKey(first).Key(binary.BigEndian.Uint64(first[protocol.KeyIDLen+8:]))
	return where, tx.Bucket(bucketDoubles).Put(append([]byte(c.Ref+"\x00"), key...), first)
}

// bookHold keeps the latest record of a held ticket (by the gateway's
// stream seq): the books hold no money for it; a release's charge comes
// in the aggregates like any other.
func bookHold(tx *bolt.Tx, h *protocol.Hold, b []byte) error {
	hb := tx.Bucket(bucketHolds)
	k := binary.BigEndian.AppendUint64([]byte(h.Gateway+"\x00"+h.Device+"\x00"), h.Ticket)
	if old := hb.Get(k); old != nil {
		if _, prev, err := strict.DecodeHold(old); err == nil && prev.Seq > h.Seq {
			return nil // a later record of the same ticket is booked
		}
	}
	return hb.Put(k, b)
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
	Voucher string `json:"voucher"`
	First   string `json:"first"`  // stream/seq of the first credit
	Second  string `json:"second"` // stream/seq of this one
}

// unpaidKey keys a booked aggregate in the wallet of its provider, by
// currency: provider 0 currency 0 kid epoch seq.
func unpaidKey(a *protocol.Aggregate, seqKey []byte) []byte {
	return append([]byte(a.Provider+"\x00"+a.Currency+"\x00"), seqKey...)
}
