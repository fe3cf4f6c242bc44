package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Payword chains in the books. A device's chain commitment is accepted as
// the chain's index 0: a reading of the commitment's start register at
// seq PaywordSeq(number, 0), which sets the meter's baseline (a new meter)
// or charges nothing (a renewal that starts where the last chain ended).
// Each payword ticket is then checked against the chain's last accepted
// payword and, if it hashes down to it, accepted as a reading of start +
// index × units, through Apply like any other ticket: dedup, cumulative
// registers, plausibility, windows and receipts are the same. The chain's
// last index and payword move with the ticket, in the same operation.
//
// The rules, each with its reason: a payword of a chain the device never
// committed (or another device's) is chain_unknown; past the chain's
// length or expiry, chain_exhausted; below the last accepted index,
// payword_backwards; more than MaxPaywordSteps past it, payword_too_far;
// not hashing down to it, payword_mismatch. A commitment whose number is
// not above the device's last, or a chain id committed before with other
// bytes, is chain_replayed; one whose start is not where the meter stands
// in the same epoch, chain_gap (the gap would be usage with no payword to
// prove it).

// chainRecord is a committed chain, how far it has been spent, and how
// far it has been reported upstream.
//
// Reporting follows the aggregate windows: the paywords a chain moved by
// in one window of its payer's (provider, account, meter) form a segment,
// [SegFrom, Last] while it is open. When a payword lands in another
// window, the open segment is finished (a segment record, "g" key) and a
// new one starts at the last index; once a segment's window has sealed,
// ReportChains sends it as a progress record naming that window's
// aggregate, whose Proven quantity the window's segments add up to. A
// payword whose usage went into no window (held, or a baseline) starts
// the next segment after itself: its usage is not in an aggregate.
type chainRecord struct {
	protocol.Commitment
	Account, Provider string           // who the chain's usage is charged to and owed to at its commitment
	Last              uint32           // the last accepted index (0: only the commitment); see loadChainNow
	LastWord          protocol.Payword // w_Last (the anchor while Last is 0)
	SegFrom           uint32           // where the segment not reported yet starts
	SegFromWord       protocol.Payword // w_SegFrom
	SegWindow         []byte           // the open segment's window (windowOfLeaf); nil: none
	SegProvider       string           // the open segment's payer: provider
	SegAccount        string           // and account
	Raw               []byte           // the commitment as the device sent it (read: valid in its transaction only)
}

// A chain is kept as two records: its terms, written once with the
// commitment ("c" key), and its segment ("s" key), written when a payword
// starts a segment in a new window, when a segment is reported and when
// the chain retires. Between those, the newest chain's last index and
// payword move only in the device's state (activeChain): loadChainNow
// reads them from there, and the "s" record's Last is authoritative only
// for a retired chain.

func (r chainRecord) encodeTerms() []byte {
	c := r.Commitment
	return metering.NewStateWriter().String(c.Device).String(string(c.Chain[:])).Uint(uint64(c.Number)).String(c.Meter).Uint(c.Units).
		Uint(uint64(c.Length)).String(string(c.Anchor[:])).Uint(c.Start).Uint(c.Expiry).Uint(c.Epoch).
		String(r.Account).String(r.Provider).Rest(r.Raw)
}

func (r chainRecord) encodeProgress() []byte {
	return metering.NewStateWriter().Uint(uint64(r.Last)).String(string(r.LastWord[:])).
		Uint(uint64(r.SegFrom)).String(string(r.SegFromWord[:])).String(string(r.SegWindow)).
		String(r.SegProvider).String(r.SegAccount)
}

// decodeProgress reads what encodeProgress wrote into r.
func (r *chainRecord) decodeProgress(v []byte) error {
	pr := metering.NewStateReader(v, "chain progress")
	r.Last = uint32(pr.Uint())
	copy(r.LastWord[:], pr.String())
	r.SegFrom = uint32(pr.Uint())
	copy(r.SegFromWord[:], pr.String())
	if w := pr.String(); w != "" {
		r.SegWindow = []byte(w)
	}
	r.SegProvider, r.SegAccount = pr.String(), pr.String()
	return pr.Done()
}

// migrateChainProgress rewrites version 6's chain progress records (last
// index and payword, last reported index and payword, when it was sent)
// as version 7's: the segment not reported yet starts at the last
// reported index, in no window, charged to the chain's payer.
func migrateChainProgress(tx *bolt.Tx) error {
	b := tx.Bucket(bucketChains)
	prefix := []byte("s\x00")
	type rewrite struct{ k, v []byte }
	var rs []rewrite
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		tv := b.Get(append([]byte("c"), k[1:]...))
		if tv == nil {
			continue
		}
		r, err := decodeTerms(tv)
		if err != nil {
			return err
		}
		pr := metering.NewStateReader(v, "chain progress (version 6)")
		r.Last = uint32(pr.Uint())
		copy(r.LastWord[:], pr.String())
		r.SegFrom = uint32(pr.Uint())
		copy(r.SegFromWord[:], pr.String())
		pr.Int() // when it was reported
		if err := pr.Done(); err != nil {
			return err
		}
		r.SegProvider, r.SegAccount = r.Provider, r.Account
		if err := activateMigrated(tx, &r); err != nil {
			return err
		}
		rs = append(rs, rewrite{append([]byte(nil), k...), r.encodeProgress()})
	}
	for _, r := range rs {
		if err := b.Put(r.k, r.v); err != nil {
			return err
		}
	}
	return nil
}

// activateMigrated puts a migrated chain's progress in its device's state
// if it is the device's newest chain.
func activateMigrated(tx *bolt.Tx, r *chainRecord) error {
	if getU64(tx.Bucket(bucketChains).Get(chainNumberKey(r.Device))) != uint64(r.Number) {
		return nil
	}
	db := tx.Bucket(bucketDevices)
	ds, err := getDeviceState(db, r.Device)
	if err != nil {
		return err
	}
	ds.Chain = activeChain{ID: r.Chain, Last: r.Last, Word: r.LastWord}
	b, err := ds.MarshalBinary()
	if err != nil {
		return err
	}
	return db.Put([]byte(r.Device), b)
}

// loadChain reads a chain's two records; ok is false if there is none.
func loadChain(b *bolt.Bucket, device string, id protocol.ChainID) (chainRecord, bool, error) {
	tv, pv := b.Get(chainKey(device, id)), b.Get(chainStateKey(device, id))
	if tv == nil || pv == nil {
		return chainRecord{}, false, nil
	}
	r, err := decodeTerms(tv)
	if err != nil {
		return r, false, err
	}
	return r, true, r.decodeProgress(pv)
}

// loadChainNow is loadChain with the chain's last index and payword as
// they are now: the device's state has them while the chain is its
// newest (see activeChain).
func loadChainNow(tx *bolt.Tx, device string, id protocol.ChainID) (chainRecord, bool, error) {
	r, ok, err := loadChain(tx.Bucket(bucketChains), device, id)
	if err != nil || !ok {
		return r, ok, err
	}
	ds, err := getDeviceState(tx.Bucket(bucketDevices), device)
	if err != nil {
		return r, false, err
	}
	if ds.Chain.ID == id {
		r.Last, r.LastWord = ds.Chain.Last, ds.Chain.Word
	}
	return r, true, nil
}

// decodeTerms reads what encodeTerms wrote.
func decodeTerms(tv []byte) (chainRecord, error) {
	var r chainRecord
	rd := metering.NewStateReader(tv, "chain terms")
	r.Device = rd.String()
	copy(r.Chain[:], rd.String())
	r.Number = uint32(rd.Uint())
	r.Meter = rd.String()
	r.Units = rd.Uint()
	r.Length = uint32(rd.Uint())
	copy(r.Anchor[:], rd.String())
	r.Start, r.Expiry, r.Epoch = rd.Uint(), rd.Uint(), rd.Uint()
	r.Account, r.Provider = rd.String(), rd.String()
	r.Raw = rd.Rest() // bbolt's memory: valid in the transaction only
	return r, rd.Err()
}

// chainStateKey is a chain's progress record: "s" device 0 chain id.
func chainStateKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("s", device), 0), id[:]...)
}

func chainKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("c", device), 0), id[:]...)
}

func chainNumberKey(device string) []byte { return joinKey("n", device) }

// chainDirtyKey marks a chain with an open segment: "d" device 0 chain id
// → the segment's window (1 in a migrated file), so that a round of
// reporting reads only the chains whose window has sealed.
var chainDirtyPrefix = []byte("d\x00")

// dirtyChain is the device and chain id of a chainDirtyKey.
func dirtyChain(k []byte) (string, protocol.ChainID) {
	return string(k[len(chainDirtyPrefix) : len(k)-protocol.ChainIDLen-1]), protocol.ChainID(k[len(k)-protocol.ChainIDLen:])
}

// A finished segment waits for its window to seal under "g" device 0
// chain id, from (4 bytes, big-endian): a chain's segments in the order
// they were spent. Its value: to, w_from, w_to, the window, the payer.
var chainSegmentPrefix = []byte("g\x00")

func chainSegmentKey(device string, id protocol.ChainID, from uint32) []byte {
	return binary.BigEndian.AppendUint32(append(append(joinKey("g", device), 0), id[:]...), from)
}

// segment is one span of a chain's paywords within one window.
type segment struct {
	device            string
	chain             protocol.ChainID
	from, to          uint32
	fromWord, toWord  protocol.Payword
	window            []byte
	provider, account string
}

func (g segment) encode() []byte {
	return metering.NewStateWriter().Uint(uint64(g.to)).String(string(g.fromWord[:])).String(string(g.toWord[:])).
		String(string(g.window)).String(g.provider).String(g.account)
}

func decodeSegment(k, v []byte) (segment, error) {
	var g segment
	n := len(chainSegmentPrefix)
	if len(k) < n+1+protocol.ChainIDLen+4 {
		return g, fmt.Errorf("%w: chain segment key %x", errRecord, k)
	}
	g.device = string(k[n : len(k)-4-protocol.ChainIDLen-1])
	copy(g.chain[:], k[len(k)-4-protocol.ChainIDLen:])
	g.from = binary.BigEndian.Uint32(k[len(k)-4:])
	r := metering.NewStateReader(v, "chain segment")
	g.to = uint32(r.Uint())
	copy(g.fromWord[:], r.String())
	copy(g.toWord[:], r.String())
	g.window = []byte(r.String())
	g.provider, g.account = r.String(), r.String()
	return g, r.Done()
}

// windowOfLeaf is the window a ticket's Merkle leaf key names: the
// sealedby key of a window (its leaves' prefix), or, for a correction,
// the correction's own leaf prefix, "c" 0 seq.
func windowOfLeaf(leafKey []byte) []byte {
	return append([]byte(nil), leafKey[:len(leafKey)-8]...)
}

// windowAggregate is the seq of the aggregate of a segment's window, 0
// while the window is open.
func windowAggregate(tx *bolt.Tx, window []byte) uint64 {
	if len(window) == 10 && bytes.HasPrefix(window, []byte("c\x00")) { // a correction, sealed as it was made
		return binary.BigEndian.Uint64(window[2:])
	}
	return getU64(tx.Bucket(bucketSealedBy).Get(window))
}

func chainDirtyKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("d", device), 0), id[:]...)
}

// CommitmentTicket is the reading a commitment stands for: the chain's
// start register at seq PaywordSeq(number, 0), dated now.
func CommitmentTicket(c *protocol.Commitment, now int64) protocol.Ticket {
	return protocol.Ticket{Device: c.Device, Seq: protocol.PaywordSeq(c.Number, 0), Time: uint64(now), Epoch: c.Epoch,
		Readings: []protocol.Reading{{Meter: c.Meter, Register: c.Start}}}
}

// ApplyCommitment accepts a chain commitment (already verified against the
// device's key) as its index 0, in a store operation; raw is the
// commitment's bytes. The receipt is the index-0 reading's. The device's
// previous chain, if any, retires: its open segment is finished, and its
// last index kept with it.
func (bk *Books) ApplyCommitment(tx *store.Tx, t *Terms, p Payer, c *protocol.Commitment, raw []byte) (protocol.Receipt, bool, error) {
	now := bk.now().UnixMilli()
	tk := CommitmentTicket(c, now)
	b := tx.Bolt().Bucket(bucketChains)
	if tv := b.Get(chainKey(c.Device, c.Chain)); tv != nil {
		rec, err := decodeTerms(tv)
		if err != nil {
			return protocol.Receipt{}, false, err
		}
		if !bytes.Equal(rec.Raw, raw) {
			return protocol.Receipt{}, false, Reject(protocol.ReasonChainReplayed, "chain %x of %s was committed before with other terms", c.Chain, c.Device)
		}
		return bk.Apply(tx, t, p, &tk, raw) // the same commitment again: its receipt again
	}
	if last := getU64(b.Get(chainNumberKey(c.Device))); uint64(c.Number) <= last {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainReplayed, "chain number %d is not above %s's last, %d", c.Number, c.Device, last)
	}
	if uint64(now) >= c.Expiry {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainExhausted, "the chain expired at %d", c.Expiry)
	}
	var prev activeChain // the chain this one retires
	check := func(ds *deviceState) error {
		if ds.LastSeq >= tk.Seq {
			return Reject(protocol.ReasonChainReplayed, "chain %d's seqs start at %d, below %s's last seq %d", c.Number, tk.Seq, c.Device, ds.LastSeq)
		}
		if m := ds.meter(c.Meter); m.Started && m.Epoch == c.Epoch && m.Register != c.Start {
			return Reject(protocol.ReasonChainGap, "the chain starts at register %d; meter %s stands at %d", c.Start, c.Meter, m.Register)
		}
		prev = ds.Chain
		return nil
	}
	rc, eff, err := bk.apply(tx, &ticketInput{t: t, p: p, tk: &tk, raw: raw}, &chainStep{check: check, next: activeChain{ID: c.Chain, Word: c.Anchor}})
	if err != nil || eff == nil || rc.Status != protocol.StatusAccepted {
		return rc, eff != nil, err
	}
	if prev != (activeChain{}) {
		if err := retireChain(tx, c.Device, prev); err != nil {
			return rc, true, err
		}
	}
	rec := chainRecord{Commitment: *c, Account: p.Account, Provider: p.Provider, LastWord: c.Anchor, SegFromWord: c.Anchor,
		Raw: append([]byte(nil), raw...)}
	for _, w := range []write{{bucketChains, chainKey(c.Device, c.Chain), rec.encodeTerms()},
		{bucketChains, chainStateKey(c.Device, c.Chain), rec.encodeProgress()},
		{bucketChains, chainNumberKey(c.Device), putU64(uint64(c.Number))}} {
		if err := tx.Put(w.bucket, w.key, w.val); err != nil {
			return rc, true, err
		}
	}
	return rc, true, nil
}

// retireChain writes a device's chain that a newer one replaced with its
// last index (from then on its progress record has it, not the device's
// state), its open segment finished.
func retireChain(tx *store.Tx, device string, prev activeChain) error {
	rec, ok, err := loadChain(tx.Bolt().Bucket(bucketChains), device, prev.ID)
	if err != nil || !ok {
		return err
	}
	rec.Last, rec.LastWord = prev.Last, prev.Word
	if err := rec.finishSegment(tx); err != nil {
		return err
	}
	if err := tx.Put(bucketChains, chainStateKey(device, prev.ID), rec.encodeProgress()); err != nil {
		return err
	}
	return tx.Delete(bucketChains, chainDirtyKey(device, prev.ID))
}

// finishSegment writes the chain's open segment, if it has paywords, as
// a finished one, and starts the next at Last, in no window yet.
func (r *chainRecord) finishSegment(tx *store.Tx) error {
	if r.Last > r.SegFrom {
		g := segment{from: r.SegFrom, to: r.Last, fromWord: r.SegFromWord, toWord: r.LastWord, window: r.SegWindow,
			provider: r.SegProvider, account: r.SegAccount}
		if err := tx.Put(bucketChains, chainSegmentKey(r.Device, r.Chain, g.from), g.encode()); err != nil {
			return err
		}
	}
	r.SegFrom, r.SegFromWord, r.SegWindow = r.Last, r.LastWord, nil
	return nil
}

// checkPayword checks a payword against its chain's last accepted one:
// from the device's state when it is the active chain, else from the
// chain's record (rec, updated with it). A repeat of the last is its
// receipt again; one below it, too far past it or not hashing down to it
// is refused.
func checkPayword(rec *chainRecord, ds *deviceState, pw *protocol.PaywordTicket, pre *PaywordPrecheck) error {
	if ds.Chain.ID == pw.Chain { // the active chain: its progress is in the device's state
		rec.Last, rec.LastWord = ds.Chain.Last, ds.Chain.Word
	}
	switch j := rec.Last; {
	case pw.Index < j:
		return Reject(protocol.ReasonPaywordBackwards, "index %d is below the chain's last, %d", pw.Index, j)
	case pw.Index == j:
		if pw.Word != rec.LastWord {
			return Reject(protocol.ReasonPaywordMismatch, "index %d is not the payword accepted for it", j)
		}
		return nil // a repeat: its receipt again
	case pw.Index-j > protocol.MaxPaywordSteps:
		return Reject(protocol.ReasonPaywordTooFar, "index %d is %d steps past the last, more than %d", pw.Index, pw.Index-j, protocol.MaxPaywordSteps)
	case pre.proves(pw, j, rec.LastWord):
		// Hashed down to the chain's last payword before the transaction.
	case protocol.PaywordWalk(&rec.Chain, pw.Word, uint64(pw.Index-j)) != rec.LastWord:
		return Reject(protocol.ReasonPaywordMismatch, "index %d does not hash down to index %d", pw.Index, j)
	}
	return nil
}

// Payword is a payword ticket to accept: its message, its bytes as
// received and, if it was checked against its chain before the
// transaction, that check.
type Payword struct {
	Ticket *protocol.PaywordTicket
	Raw    []byte
	Pre    *PaywordPrecheck
}

// PaywordPrecheck is the hashing of a payword's check done before the
// transaction, off the committer: that the payword at index At, For,
// hashes down to Word at index Base. Inside, the check is then only that
// the chain's last accepted payword is still that one; if it moved (a
// payword of the device committed meanwhile), the payword is hashed
// again there. Only PrecheckPayword makes one.
type PaywordPrecheck struct {
	chain      protocol.ChainID
	at, base   uint32
	for_, word protocol.Payword
}

// PrecheckPayword hashes pw down to word, a payword of its chain the
// gateway accepted at index base (the last it saw accepted), and returns
// the check. A payword that does not hash down to it is not of the chain
// (every payword after base hashes down to base's), and is refused here
// (payword_mismatch), before it reaches the transaction. One at or below
// base, or too far past it, is left to the transaction: (nil, nil).
func PrecheckPayword(pw *protocol.PaywordTicket, base uint32, word protocol.Payword) (*PaywordPrecheck, error) {
	if pw.Index <= base || pw.Index-base > protocol.MaxPaywordSteps {
		return nil, nil
	}
	if protocol.PaywordWalk(&pw.Chain, pw.Word, uint64(pw.Index-base)) != word {
		return nil, Reject(protocol.ReasonPaywordMismatch, "index %d does not hash down to index %d, accepted before", pw.Index, base)
	}
	return &PaywordPrecheck{chain: pw.Chain, at: pw.Index, base: base, for_: pw.Word, word: word}, nil
}

// proves is whether the check is of pw and hashed it down to the chain's
// last accepted payword, last at index j.
func (c *PaywordPrecheck) proves(pw *protocol.PaywordTicket, j uint32, last protocol.Payword) bool {
	return c != nil && c.chain == pw.Chain && c.at == pw.Index && c.for_ == pw.Word && c.base == j && c.word == last
}

// ApplyPayword checks a payword ticket against its chain and accepts it as
// the chain's reading, in a store operation. The receipt carries the seq
// of the reading it stands for (chain number × 2^32 + index), also when
// it is refused. The
// chain's last index and payword move in the device's state, written
// with the ticket; the chain's own records are written only when its
// segment changes window.
func (bk *Books) ApplyPayword(tx *store.Tx, t *Terms, p Payer, in Payword) (protocol.Receipt, bool, error) {
	pw, raw := in.Ticket, in.Raw
	now := bk.now().UnixMilli()
	tk := &protocol.Ticket{Device: pw.Device, Seq: uint64(pw.Index), Time: uint64(now)}
	refuse := func(err error) (protocol.Receipt, bool, error) {
		return protocol.Receipt{Device: pw.Device, Seq: tk.Seq}, false, err
	}
	rec, ok, err := loadChain(tx.Bolt().Bucket(bucketChains), pw.Device, pw.Chain)
	if err != nil {
		return refuse(err)
	}
	if !ok {
		return refuse(Reject(protocol.ReasonChainUnknown, "%s committed to no chain %x", pw.Device, pw.Chain))
	}
	tk.Seq, tk.Epoch = protocol.PaywordSeq(rec.Number, pw.Index), rec.Epoch
	if pw.Index > rec.Length {
		return refuse(Reject(protocol.ReasonChainExhausted, "index %d is past the chain's length %d", pw.Index, rec.Length))
	}
	tk.Readings = []protocol.Reading{{Meter: rec.Meter, Register: rec.Register(pw.Index)}}
	if uint64(now) >= rec.Expiry {
		return refuse(Reject(protocol.ReasonChainExhausted, "the chain expired at %d", rec.Expiry))
	}
	check := func(ds *deviceState) error { return checkPayword(&rec, ds, pw, in.Pre) }
	rc, eff, err := bk.apply(tx, &ticketInput{t: t, p: p, tk: tk, raw: raw}, &chainStep{check: check, next: activeChain{ID: pw.Chain, Last: pw.Index, Word: pw.Word}, payword: true})
	if err != nil || eff == nil {
		return rc, false, err
	}
	var window []byte // the window the payword's usage went into
	if eff.hold == nil && len(eff.leaves) == 1 {
		window = windowOfLeaf(eff.leaves[0].key)
	}
	if window != nil && bytes.Equal(window, rec.SegWindow) && rec.SegProvider == p.Provider && rec.SegAccount == p.Account {
		return rc, true, nil // the open segment goes on: nothing to write
	}
	// The open segment, if any, ends where this payword starts, and the
	// next one starts there, in this payword's window — or after it, if
	// its usage went into no window (held, or a baseline).
	if err := rec.finishSegment(tx); err != nil {
		return rc, true, err
	}
	rec.SegWindow, rec.SegProvider, rec.SegAccount = window, p.Provider, p.Account
	if window == nil {
		rec.SegFrom, rec.SegFromWord = pw.Index, pw.Word
	}
	rec.Last, rec.LastWord = pw.Index, pw.Word
	if err := tx.Put(bucketChains, chainStateKey(pw.Device, pw.Chain), rec.encodeProgress()); err != nil {
		return rc, true, err
	}
	if window != nil { // an open segment: marked, with its window, until it is reported
		if err := tx.Put(bucketChains, chainDirtyKey(pw.Device, pw.Chain), window); err != nil {
			return rc, true, err
		}
	}
	return rc, true, nil
}

// maxReportsPerRound bounds the progress records one ReportChains call
// writes, so that one round of housekeeping stays short.
const maxReportsPerRound = 256

// ReportChains puts in the outbox a chain progress record for each
// segment whose window has sealed (see chainRecord): the device's
// commitment and the paywords at the segment's ends, naming the window's
// aggregate, signed with the gateway's key and numbered in the stream
// after it. A chain's segments go in the order they were spent: one whose
// window is still open holds back the chain's later ones. A segment with
// no window (spent before windows were recorded in the state file) goes
// at once, naming no aggregate. It returns how many it wrote. Without a
// signer (a gateway that seals nothing) it does nothing.
func (bk *Books) ReportChains(ctx context.Context, t *Terms, now time.Time) (int, error) {
	if bk.cfg.Signer == nil {
		return 0, nil
	}
	// Most rounds have nothing due: look first, and write only then.
	var anyDue bool
	if err := bk.st.View(func(tx *bolt.Tx) error {
		due, err := dueSegments(tx, 1)
		anyDue = err != nil || len(due) > 0
		return nil
	}); err != nil || !anyDue {
		return 0, err
	}
	n := 0
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Bolt()
		n = 0
		due, err := dueSegments(tx, maxReportsPerRound)
		if err != nil {
			return err
		}
		aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
		var ws []write
		var dels [][]byte
		for _, d := range due {
			rec, ok, err := loadChainNow(tx, d.device, d.chain)
			if err != nil {
				return err
			}
			dels = append(dels, d.key)
			if !ok || d.to <= d.from {
				continue // a chain gone, or a mark with nothing after it: only the key goes
			}
			if d.open { // the chain's open segment: it closes, and the next starts at its end
				rec.SegFrom, rec.SegFromWord, rec.SegWindow = rec.Last, rec.LastWord, nil
				ws = append(ws, write{bucketChains, chainStateKey(d.device, d.chain), rec.encodeProgress()})
			}
			aggSeq++
			p := protocol.ChainProgress{Gateway: terms(t).GatewayID, Seq: bk.wire(aggSeq), Provider: d.provider, Account: d.account,
				Commitment: rec.Raw, From: d.from, FromWord: d.fromWord, To: d.to, ToWord: d.toWord, Epoch: bk.cfg.Stream.Epoch}
			if d.aggregate > bk.cfg.SeqBase { // an aggregate sealed before a restore is in the old stream: not named
				p.Aggregate = bk.wire(d.aggregate)
			}
			var enc protocol.Encoder
			pb, err := enc.AppendChainProgress(nil, &p, bk.cfg.Signer)
			if err != nil {
				return fmt.Errorf("chain progress record: %w", err)
			}
			ws = append(ws, write{bucketOutbox, putU64(aggSeq), pb},
				write{bucketRecords, putU64(aggSeq), metering.NewStateWriter().String(d.account).Int(now.UnixMilli())})
			n++
		}
		if n > 0 {
			ws = append(ws, write{bucketMeta, metaAggSeq, putU64(aggSeq)})
		}
		if err := putAll(stx, ws); err != nil {
			return err
		}
		for _, k := range dels {
			if err := stx.Delete(bucketChains, k); err != nil {
				return err
			}
		}
		for range n {
			bk.cfg.OnSeal("chain_progress")
		}
		return nil
	})
	return n, err
}

// dueSegment is a segment ReportChains can send: its window has sealed
// (aggregate is its seq) or it has none.
type dueSegment struct {
	segment
	key       []byte // its "g" key, or the chain's "d" key for an open segment
	open      bool
	aggregate uint64
}

// dueSegments finds up to max segments due, finished ones first, in each
// chain's order: a chain with a segment not due has none of its later
// ones listed.
func dueSegments(tx *bolt.Tx, max int) ([]dueSegment, error) {
	b := tx.Bucket(bucketChains)
	var out []dueSegment
	held := map[string]bool{} // chains with a segment whose window is open
	c := b.Cursor()
	for k, v := c.Seek(chainSegmentPrefix); k != nil && bytes.HasPrefix(k, chainSegmentPrefix) && len(out) < max; k, v = c.Next() {
		g, err := decodeSegment(k, v)
		if err != nil {
			return nil, err
		}
		name := g.device + "\x00" + string(g.chain[:])
		if held[name] {
			continue
		}
		agg := windowAggregate(tx, g.window)
		if agg == 0 && len(g.window) > 0 {
			held[name] = true
			continue
		}
		out = append(out, dueSegment{segment: g, key: append([]byte(nil), k...), aggregate: agg})
	}
	for k, v := c.Seek(chainDirtyPrefix); k != nil && bytes.HasPrefix(k, chainDirtyPrefix) && len(out) < max; k, v = c.Next() {
		device, id := dirtyChain(k)
		if held[device+"\x00"+string(id[:])] {
			continue
		}
		if len(v) > 1 && windowAggregate(tx, v) == 0 {
			continue // the mark names the open segment's window, still open: no need to read the chain
		}
		rec, ok, err := loadChainNow(tx, device, id)
		if err != nil {
			return nil, err
		}
		d := dueSegment{key: append([]byte(nil), k...), open: true} // a chain gone: only its mark goes
		if ok {
			d.segment = segment{device: device, chain: id, from: rec.SegFrom, to: rec.Last, fromWord: rec.SegFromWord, toWord: rec.LastWord,
				window: rec.SegWindow, provider: rec.SegProvider, account: rec.SegAccount}
			if d.aggregate = windowAggregate(tx, rec.SegWindow); d.aggregate == 0 && len(rec.SegWindow) > 0 {
				continue // its window is open
			}
		}
		d.device, d.chain = device, id
		out = append(out, d)
	}
	return out, nil
}

// ChainView is a device's payword chain as the books have it: the
// commitment as the device sent it and the last payword accepted, which
// together prove the device's usage on the chain to anyone (see
// provider.VerifyPayword).
type ChainView struct {
	Commitment []byte           `json:"commitment"`
	Chain      protocol.ChainID `json:"chain"`
	Number     uint32           `json:"number"`
	Meter      string           `json:"meter"`
	Length     uint32           `json:"length"`
	Last       uint32           `json:"last_index"`
	LastWord   protocol.Payword `json:"last_payword"`
	Register   uint64           `json:"register"`
}

// Chains lists a device's committed chains, by chain id.
func (bk *Books) Chains(device string) ([]ChainView, error) {
	st := bk.st
	out := []ChainView{}
	err := st.View(func(tx *bolt.Tx) error {
		prefix := append(joinKey("c", device), 0)
		b := tx.Bucket(bucketChains)
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			r, ok, err := loadChainNow(tx, device, protocol.ChainID(k[len(prefix):]))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			out = append(out, ChainView{Commitment: append([]byte(nil), r.Raw...), Chain: r.Chain, Number: r.Number, Meter: r.Meter, Length: r.Length,
				Last: r.Last, LastWord: r.LastWord, Register: r.Register(r.Last)})
		}
		return nil
	})
	return out, err
}
