package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

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
	r.books = boltBooks{db}
	return r, nil
}

// boltBooks are the books in the embedded file.
type boltBooks struct{ db *bolt.DB }

func (bb boltBooks) Book(_ context.Context, s protocol.StreamID, rec Record, b []byte) (BookResult, error) {
	var res BookResult
	err := bb.db.Update(func(tx *bolt.Tx) error {
		var err error
		res, err = book(tx, s, rec, b)
		return err
	})
	return res, err
}

func (bb boltBooks) Close() error { return bb.db.Close() }

func (bb boltBooks) OpenClaims(context.Context) (int, error) {
	var n int
	err := bb.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketPaywordClaims).Stats().KeyN
		return nil
	})
	return n, err
}

func (bb boltBooks) EachBooked(_ context.Context, fn func(b []byte) error) error {
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
		bucketPaywordClaims, bucketPaywordChains, bucketRestores, bucketSuperseded, bucketResolved, bucketFleetCommands, bucketFleetIDs, bucketFleetAcks} {
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

// book is Accept's transaction: the identity checks, then the booking.
func book(tx *bolt.Tx, s protocol.StreamID, rec Record, b []byte) (BookResult, error) {
	var res BookResult
	bind := tx.Bucket(bucketBindings)
	bound := bind.Get(s.KeyID[:])
	switch {
	case bound == nil:
		if err := bind.Put(s.KeyID[:], []byte(rec.Gateway)); err != nil {
			return res, err
		}
	case string(bound) != rec.Gateway:
		res.Held, res.Bound = HoldWrongGateway, string(bound)
		return res, hold(tx, s, rec.Seq, HoldWrongGateway, b)
	}
	key := seqKey(s, rec.Seq)
	if old := tx.Bucket(bucketBooked).Get(key); old != nil {
		if bytes.Equal(old, b) {
			res.Duplicate = true
			return res, nil
		}
		res.Held = HoldConflict
		return res, hold(tx, s, rec.Seq, HoldConflict, b)
	}
	reset, err := bookStream(tx, s, rec.Gateway, rec.Seq, b)
	if err != nil {
		return res, err
	}
	res.Reset = reset
	if rec.Restore != nil {
		res.Restore, err = bookRestore(tx, s, rec.Restore)
		return res, err
	}
	if cut, ok := cutOf(tx, s); ok && rec.Seq > cut {
		sr, err := bookSuperseded(tx, key, b)
		if sr != nil {
			res.Superseded = &Superseded{Kind: sr.Kind, Provider: sr.Provider, Account: sr.Account, Currency: sr.Currency, Amount: sr.Amount, Count: 1}
		}
		return res, err
	}
	if rec.Credit != nil {
		res.Double, err = bookCredit(tx, key, rec.Credit)
		return res, err
	}
	if rec.Hold != nil {
		return res, bookHold(tx, rec.Hold, b)
	}
	if rec.Ack != nil {
		return res, bookAck(tx, rec.Ack, b)
	}
	if rec.Progress != nil {
		err := rec.Unproven
		if err == nil {
			err = proveBolt(tx, s, &rec)
		}
		if errors.Is(err, ErrPayword) {
			res.Held, res.Why = HoldPaywordUnproven, err.Error()
			return res, hold(tx, s, rec.Seq, HoldPaywordUnproven, b)
		}
		if err != nil {
			return res, err
		}
		return res, bookPayword(tx, rec.Progress, rec.Usage)
	}
	return res, bookAggregate(tx, s, key, rec.Agg)
}

// bookAggregate books an aggregate (booked under key): its payword claim,
// its place in its provider's wallet (unpaid) and its account's totals.
func bookAggregate(tx *bolt.Tx, s protocol.StreamID, key []byte, a *protocol.Aggregate) error {
	if a.Proven > 0 {
		if err := claimBolt(tx, s, a); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketUnpaid).Put(unpaidKey(a, key), binary.BigEndian.AppendUint64(nil, a.Amount)); err != nil {
		return err
	}
	tb := tx.Bucket(bucketTotals)
	tk := []byte(a.Provider + "\x00" + a.Account + "\x00" + a.Currency)
	t := decodeTotal(tb.Get(tk))
	var ok bool
	if t.Amount, ok = addU64(t.Amount, a.Amount); !ok {
		return fmt.Errorf("total of %s/%s overflows", a.Provider, a.Account)
	}
	if t.Quantity, ok = addU64(t.Quantity, a.Quantity); !ok {
		return fmt.Errorf("quantity of %s/%s overflows", a.Provider, a.Account)
	}
	t.Tickets += a.Tickets
	t.Aggregates++
	return tb.Put(tk, t.encode())
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
	return putClaim(b, k, ClaimAggregate(c, a))
}

// proveBolt adds a verified progress record to its chain's proven index
// and its aggregate's claim; an error wrapping ErrPayword says why the
// record cannot be booked.
func proveBolt(tx *bolt.Tx, s protocol.StreamID, rec *Record) error {
	p, u := rec.Progress, rec.Usage
	chains := tx.Bucket(bucketPaywordChains)
	ck := append(append([]byte(u.Device), 0), u.Chain[:]...)
	last := chains.Get(ck) // the highest index proven (4 bytes) and its payword
	var lastTo uint32
	lastWord := rec.Commitment.Anchor
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
	c, linked, err := ProveClaim(c, p, u, booked, ChainMark{LastTo: lastTo, Seen: last != nil})
	if err != nil {
		return err
	}
	if err := WalkProof(rec.Commitment, &rec.Proof, lastTo, lastWord); err != nil {
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
	if rec.Superseded && seq > rec.Cut {
		return reset, nil // booked as superseded: no part of the stream's count or gaps
	}
	rec.High = max(rec.High, seq)
	rec.Count++
	return reset, sb.Put(sk, rec.encode())
}

// hold keeps an aggregate that cannot be booked, once per distinct bytes.
func hold(tx *bolt.Tx, s protocol.StreamID, seq uint64, reason HoldReason, b []byte) error {
	h := sha256.Sum256(b)
	k := append(seqKey(s, seq), h[:8]...)
	hb := tx.Bucket(bucketHeld)
	if hb.Get(k) != nil {
		return nil
	}
	v := binary.BigEndian.AppendUint64([]byte{byte(reason)}, uint64(time.Now().UnixMilli()))
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
	High          uint64 // highest seq booked (at most Cut once superseded)
	Count         uint64 // records booked (up to Cut once superseded)
	First         int64  // unix ms of the first booking
	Reset         bool   // the stream began as a reset of the key's epoch ResetFrom
	ResetFrom     uint64
	ResetFromLast uint64 // ResetFrom's highest seq when this stream began
	// Superseded: a restore superseded the stream after seq Cut; what it
	// numbered later is booked as superseded and counts in no gap.
	Superseded bool
	Cut        uint64
}

// The flag byte after the numbers: bit 0 a reset, bit 1 superseded
// (then Cut, 8 bytes, follows the flag), then the gateway id.
func (r streamRecord) encode() []byte {
	b := make([]byte, 0, 50+len(r.Gateway))
	for _, v := range []uint64{r.High, r.Count, uint64(r.First), r.ResetFrom, r.ResetFromLast} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	flag := byte(0)
	if r.Reset {
		flag |= 1
	}
	if r.Superseded {
		flag |= 2
	}
	b = append(b, flag)
	if r.Superseded {
		b = binary.BigEndian.AppendUint64(b, r.Cut)
	}
	return append(b, r.Gateway...)
}

func decodeStream(b []byte) (streamRecord, bool) {
	var r streamRecord
	if len(b) < 41 {
		return r, false
	}
	r.High, r.Count, r.First = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), int64(binary.BigEndian.Uint64(b[16:]))
	r.ResetFrom, r.ResetFromLast = binary.BigEndian.Uint64(b[24:]), binary.BigEndian.Uint64(b[32:])
	r.Reset, r.Superseded = b[40]&1 != 0, b[40]&2 != 0
	rest := b[41:]
	if r.Superseded {
		if len(rest) < 8 {
			return r, false
		}
		r.Cut, rest = binary.BigEndian.Uint64(rest), rest[8:]
	}
	r.Gateway = string(rest)
	return r, true
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

// HeldFields fills in who a held record is of, from its bytes: an
// aggregate's gateway, provider, account and amount, or a chain progress
// record's gateway, provider and account.
func HeldFields(h *Held, b []byte) {
	if _, a, err := strict.DecodeAggregate(b); err == nil {
		h.Gateway, h.Provider, h.Account, h.Amount, h.Currency = a.Gateway, a.Provider, a.Account, a.Amount, a.Currency
	} else if m, err := strict.Decode(b); err == nil && m.Progress != nil {
		h.Gateway, h.Provider, h.Account = m.Progress.Gateway, m.Progress.Provider, m.Progress.Account
	}
}

// MaxGaps bounds the seqs listed per stream.
const MaxGaps = 1000

func (bb boltBooks) Report(context.Context) (*Report, error) {
	rep := &Report{Gaps: map[string][]uint64{}, High: map[string]uint64{}}
	err := bb.db.View(func(tx *bolt.Tx) error {
		for _, read := range []func(*bolt.Tx, *Report) error{reportTotals, reportStreams, reportCredits, reportDoubles,
			reportQuarantine, reportPaywords, reportClaims, reportHeld, reportRestores} {
			if err := read(tx, rep); err != nil {
				return err
			}
		}
		return nil
	})
	sort.Slice(rep.Totals, func(i, j int) bool {
		a, b := rep.Totals[i], rep.Totals[j]
		return a.Provider+"\x00"+a.Account+"\x00"+a.Currency < b.Provider+"\x00"+b.Account+"\x00"+b.Currency
	})
	return rep, err
}

// reportTotals reads the totals by provider, account and currency into rep.
func reportTotals(tx *bolt.Tx, rep *Report) error {
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
	return nil
}

// reportStreams reads the streams with their gaps, highest seqs and resets into rep.
func reportStreams(tx *bolt.Tx, rep *Report) error {
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
	return nil
}

// reportCredits reads the credits into rep.
func reportCredits(tx *bolt.Tx, rep *Report) error {
	tx.Bucket(bucketCredits).ForEach(func(k, v []byte) error {
		p := bytes.SplitN(k, []byte{0}, 3)
		if len(p) == 3 && len(v) == 16 {
			rep.Credits = append(rep.Credits, CreditTotal{Account: string(p[0]), Currency: string(p[1]), Kind: string(p[2]),
				Amount: binary.BigEndian.Uint64(v), Count: binary.BigEndian.Uint64(v[8:])})
		}
		return nil
	})
	return nil
}

// reportDoubles reads the vouchers credited twice into rep.
func reportDoubles(tx *bolt.Tx, rep *Report) error {
	tx.Bucket(bucketDoubles).ForEach(func(k, v []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) != i+1+protocol.KeyIDLen+16 || len(v) != protocol.KeyIDLen+16 {
			return nil
		}
		second := k[i+1:]
		d := DoubleRedemption{Voucher: string(k[:i]),
			First:  streamOfKey(v).Key(binary.BigEndian.Uint64(v[protocol.KeyIDLen+8:])),
			Second: streamOfKey(second).Key(binary.BigEndian.Uint64(second[protocol.KeyIDLen+8:]))}
		if _, c, err := strict.DecodeCredit(tx.Bucket(bucketBooked).Get(second)); err == nil {
			d.Account, d.Amount, d.Currency, d.Gateway = c.Account, c.Amount, c.Currency, c.Gateway
		}
		d.Resolved = resolutionOf(tx, d.Voucher)
		rep.Doubles = append(rep.Doubles, d)
		return nil
	})
	return nil
}

// reportQuarantine reads the tickets gateways hold into rep.
func reportQuarantine(tx *bolt.Tx, rep *Report) error {
	tx.Bucket(bucketHolds).ForEach(func(_, v []byte) error {
		if _, h, err := strict.DecodeHold(v); err == nil {
			rep.Quarantine = append(rep.Quarantine, h)
		}
		return nil
	})
	return nil
}

// reportPaywords reads the payword totals into rep.
func reportPaywords(tx *bolt.Tx, rep *Report) error {
	tx.Bucket(bucketPaywords).ForEach(func(k, v []byte) error {
		parts := bytes.Split(k, []byte{0})
		if len(parts) == 3 {
			t := decodePaywordTotal(v)
			t.Provider, t.Account, t.Meter = string(parts[0]), string(parts[1]), string(parts[2])
			rep.Paywords = append(rep.Paywords, t)
		}
		return nil
	})
	return nil
}

// reportClaims reads the payword claims not reconciled into rep.
func reportClaims(tx *bolt.Tx, rep *Report) error {
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
	return nil
}

// reportHeld reads the records held, not booked into rep.
func reportHeld(tx *bolt.Tx, rep *Report) error {
	return tx.Bucket(bucketHeld).ForEach(func(k, v []byte) error {
		if len(k) != protocol.KeyIDLen+24 || len(v) < 9 {
			return nil
		}
		h := Held{Stream: streamOfKey(k).String(), Seq: binary.BigEndian.Uint64(k[protocol.KeyIDLen+8:]),
			Reason: HoldReason(v[0]).String(), At: int64(binary.BigEndian.Uint64(v[1:])), Bytes: hex.EncodeToString(v[9:])}
		HeldFields(&h, v[9:])
		rep.Held = append(rep.Held, h)
		return nil
	})
}

// gaps lists the first maxGaps seqs in 1..high not booked in the stream
// whose key is prefix.
func gaps(c *bolt.Cursor, prefix []byte, high uint64) []uint64 {
	var out []uint64
	want := uint64(1)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < MaxGaps; k, _ = c.Next() {
		seq := binary.BigEndian.Uint64(k[len(prefix):])
		for ; want < seq && len(out) < MaxGaps; want++ {
			out = append(out, want)
		}
		want = seq + 1
	}
	for ; want <= high && len(out) < MaxGaps; want++ {
		out = append(out, want)
	}
	return out
}

// bookCredit adds a credit to the credit totals and, for a voucher,
// records where it was first credited; a voucher credited before returns
// where (stream/seq) and is recorded as a double redemption.
func bookCredit(tx *bolt.Tx, key []byte, c *protocol.Credit) (string, error) {
	cb := tx.Bucket(bucketCredits)
	ck := []byte(c.Account + "\x00" + c.Currency + "\x00" + CreditKind(c))
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
	if c.Kind == protocol.CreditAdjustment && c.Voucher != "" {
		return "", resolve(tx, key, c)
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

// unpaidKey keys a booked aggregate in the wallet of its provider, by
// currency: provider 0 currency 0 kid epoch seq.
func unpaidKey(a *protocol.Aggregate, seqKey []byte) []byte {
	return append([]byte(a.Provider+"\x00"+a.Currency+"\x00"), seqKey...)
}
