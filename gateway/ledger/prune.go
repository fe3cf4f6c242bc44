package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// The edge keeps per-ticket data only while it serves a purpose. Once
// every upstream confirmed an aggregate (and, with an audit sink, the
// sink took its audit bundle) and its window ended more than the
// retention ago, Prune removes what only that aggregate needed, folding
// every amount into running totals so that the reconciliation still adds
// up to the nano:
//
//   - its Merkle leaves and its sealed record (the sealed amount goes to
//     the folded sealed total), its sealedby and slot index entries;
//   - the tickets whose last leaf it held: their whole record, receipt
//     and raw bytes (their charge goes to the folded receipts total). A
//     repeat of such a ticket is still answered from the device's state:
//     duplicate, nothing charged;
//   - a credit or hold record's outbox index;
//   - the ledger entries of every account older than the retention and
//     older than the end of the last window pruned, folded into one
//     balance per account and UTC day (the folded bucket);
//   - holds released or voided longer than the retention ago, with the
//     held tickets' records (counted in the folded holds line).
//
// What stays grows with the fleet, not with history: a device state per
// device, an account, pricing state and open window per account and
// meter, the open holds, and the folded days.

var (
	metaPrunedThrough = []byte("pruned-through")
	metaPrunedEnd     = []byte("pruned-end")     // the end (Unix ms) of the last window pruned
	metaAuditShipped  = []byte("audit-shipped")  // the last aggregate seq the audit sink took
	metaFoldedTickets = []byte("folded/tickets") // charged(8) count(8) of ticket records pruned
	metaFoldedSealed  = []byte("folded/sealed")  // amount(8) count(8) of sealed records pruned
	metaFoldedHolds   = []byte("folded/holds")   // released(8) voided(8) charged(8) of holds pruned
)

// maxPrunePerRun bounds the aggregates one pruning commit removes, and
// maxFoldPerRun the ledger entries it folds.
const (
	maxPrunePerRun = 256
	maxFoldPerRun  = 4096
)

// PruneOptions say what Prune may remove.
type PruneOptions struct {
	// Upstreams must all have confirmed an aggregate; without any, nothing
	// is ever confirmed and nothing is pruned.
	Upstreams []string
	// Retention is how long after its window ended an aggregate's
	// per-ticket data stays at the edge.
	Retention time.Duration
	// Audit: an audit sink takes every aggregate's bundle first; nothing
	// it has not taken is pruned.
	Audit bool
	Now   time.Time
}

// PruneTickets prunes what opts allow; see the package's description of
// what stays. It returns how many aggregates it pruned.
func (bk *Books) PruneTickets(ctx context.Context, upstreams []string, retention time.Duration, now time.Time) (int, error) {
	return bk.Prune(ctx, PruneOptions{Upstreams: upstreams, Retention: retention, Now: now})
}

// Prune removes, in aggregate-seq order and at most maxPrunePerRun
// aggregates per call, the per-ticket data opts allow, and folds old
// ledger entries and settled holds. It returns how many aggregates it
// pruned.
func (bk *Books) Prune(ctx context.Context, opts PruneOptions) (int, error) {
	if len(opts.Upstreams) == 0 {
		return 0, nil
	}
	pruned := 0
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Bolt()
		pruned = 0
		p := pruner{stx: stx, tx: tx, meta: tx.Bucket(bucketMeta), cutoff: opts.Now.Add(-opts.Retention).UnixMilli()}
		low := uint64(1<<63 - 1)
		for _, n := range opts.Upstreams {
			low = min(low, getU64(p.meta.Get(upstreamKey(n))))
		}
		if opts.Audit {
			low = min(low, getU64(p.meta.Get(metaAuditShipped)))
		}
		var err error
		if pruned, err = p.aggregates(low); err != nil {
			return err
		}
		if err := p.entries(); err != nil {
			return err
		}
		if err := p.holds(); err != nil {
			return err
		}
		return putAll(stx, p.writes)
	})
	return pruned, err
}

// pruner is one Prune's transaction and what it collected.
type pruner struct {
	stx    *store.Tx    // writes
	tx     *bolt.Tx     // reads
	meta   *bolt.Bucket // reads
	cutoff int64
	writes []write
}

func (p *pruner) del(bucket, key []byte) error {
	return p.stx.Delete(bucket, key)
}

// addN adds vs to the 8-byte counters under key.
func (p *pruner) addN(key []byte, vs ...uint64) error {
	old := p.meta.Get(key)
	out := make([]byte, 0, 8*len(vs))
	for i, v := range vs {
		var cur uint64
		if len(old) >= 8*(i+1) {
			cur = binary.BigEndian.Uint64(old[8*i:])
		}
		out = binary.BigEndian.AppendUint64(out, cur+v)
	}
	return p.stx.Put(bucketMeta, key, out)
}

// aggregates prunes the aggregates after pruned-through up to low whose
// window ended before the cutoff.
func (p *pruner) aggregates(low uint64) (int, error) {
	done := getU64(p.meta.Get(metaPrunedThrough))
	seq, pruned := done, 0
	var sealedAmount, sealedCount, end uint64
	for seq < low && pruned < maxPrunePerRun {
		key := putU64(seq + 1)
		if r := p.tx.Bucket(bucketRecords).Get(key); r != nil {
			rd := metering.NewStateReader(r, "outbox record")
			_ = rd.String()
			if at := rd.Int(); rd.Done() == nil && at > p.cutoff {
				break
			}
			if err := p.del(bucketRecords, key); err != nil {
				return 0, err
			}
			seq++
			continue
		}
		rec, err := decodeSealedRecord(p.tx.Bucket(bucketSealed).Get(key))
		if err != nil {
			return 0, err
		}
		if rec.End > p.cutoff {
			break // aggregates seal in order of their windows closing: later ones are younger
		}
		seq++
		pruned++
		end = uint64(max(rec.End, 0))
		sealedAmount += uint64(rec.Amount)
		sealedCount++
		prefix := rec.leafPrefix(seq)
		window := rec.Fold == 0 && rec.Corrects == 0 && rec.Reason != 0
		if window || rec.Fold != 0 { // their leaves' prefix maps to the seq
			if err := p.del(bucketSealedBy, prefix); err != nil {
				return 0, err
			}
		}
		if window {
			sk := seqKey(uint64(rec.Start), rec.Provider, rec.Account, rec.Meter)
			if getU64(p.tx.Bucket(bucketSlotIndex).Get(sk)) == seq {
				if err := p.del(bucketSlotIndex, sk); err != nil {
					return 0, err
				}
			}
		}
		if err := p.leaves(prefix); err != nil {
			return 0, err
		}
		if err := p.del(bucketSealed, key); err != nil {
			return 0, err
		}
	}
	if seq == done {
		return 0, nil
	}
	if err := p.addN(metaFoldedSealed, sealedAmount, sealedCount); err != nil {
		return 0, err
	}
	p.writes = append(p.writes, write{bucketMeta, metaPrunedThrough, putU64(seq)})
	if end > 0 {
		p.writes = append(p.writes, write{bucketMeta, metaPrunedEnd, putU64(end)})
	}
	return pruned, nil
}

// leaves drops the leaves under prefix, and the record of each ticket
// whose last leaf it was.
func (p *pruner) leaves(prefix []byte) error {
	type drop struct{ key, ticket []byte }
	var drops []drop
	c := p.tx.Bucket(bucketLeaves).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
		drops = append(drops, drop{append([]byte(nil), k...), ticketKey(v[32:])})
	}
	tickets := p.tx.Bucket(bucketTickets)
	var charged, count uint64
	for _, d := range drops {
		if err := p.del(bucketLeaves, d.key); err != nil {
			return err
		}
		if d.ticket == nil {
			continue
		}
		rec, err := decodeTicketRecord(tickets.Get(d.ticket))
		if err != nil {
			continue
		}
		if rec.Leaves = removeLeaf(rec.Leaves, d.key); len(rec.Leaves) > 0 {
			if err := p.stx.Put(bucketTickets, d.ticket, rec.encode()); err != nil {
				return err
			}
			continue
		}
		charged += rec.Charged
		count++
		if err := p.del(bucketTickets, d.ticket); err != nil {
			return err
		}
	}
	return p.addN(metaFoldedTickets, charged, count)
}

// entries folds ledger entries older than the cutoff and than the end of
// the last window pruned into one balance per account and UTC day.
func (p *pruner) entries() error {
	cutoff := min(p.cutoff, int64(getU64(p.meta.Get(metaPrunedEnd))))
	if cutoff <= 0 {
		return nil
	}
	fb := p.tx.Bucket(bucketFolded)
	folded := map[string]FoldedDay{}
	var dels [][]byte
	var accounts []string
	p.tx.Bucket(bucketAccounts).ForEach(func(k, _ []byte) error { accounts = append(accounts, string(k)); return nil })
	for _, acct := range accounts {
		prefix := []byte(acct + "\x00")
		c := p.tx.Bucket(bucketEntries).Cursor()
		// An account's entries are in seq order, so in time order.
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(dels) < maxFoldPerRun; k, v = c.Next() {
			var e metering.Entry
			if err := e.UnmarshalBinary(v); err != nil {
				return err
			}
			if e.Time >= cutoff {
				break
			}
			day := e.Time - ((e.Time%dayMs)+dayMs)%dayMs
			fk := string(binary.BigEndian.AppendUint64([]byte(e.Account+"\x00"), uint64(day)))
			f, ok := folded[fk]
			if !ok {
				if v := fb.Get([]byte(fk)); v != nil {
					var err error
					if f, err = decodeFoldedDay(v); err != nil {
						return err
					}
				}
				f.Account, f.Day = e.Account, day
			}
			if err := f.add(e); err != nil {
				return err
			}
			folded[fk] = f
			dels = append(dels, append([]byte(nil), k...))
		}
	}
	for _, k := range dels {
		if err := p.del(bucketEntries, k); err != nil {
			return err
		}
	}
	for k, f := range folded {
		p.writes = append(p.writes, write{bucketFolded, []byte(k), f.encode()})
	}
	return nil
}

const dayMs = 24 * 3600 * 1000

// holds drops holds settled before the cutoff, with their tickets'
// records when no leaf keeps them (a voided hold's ticket never had one).
func (p *pruner) holds() error {
	hb := p.tx.Bucket(bucketHolds)
	var dels []holdRecord
	c := hb.Cursor()
	for k, v := c.First(); k != nil && len(dels) < maxFoldPerRun; k, v = c.Next() {
		h, err := decodeHoldRecord(v)
		if err != nil {
			return err
		}
		if h.State != protocol.HoldHeld && h.SettledAt < p.cutoff {
			dels = append(dels, h)
		}
	}
	var released, voided, charged uint64
	for _, h := range dels {
		tk := seqKey(h.Seq, h.Device)
		if err := p.del(bucketHolds, tk); err != nil {
			return err
		}
		if h.State == protocol.HoldReleased {
			released++
			charged += uint64(h.Charged)
			continue // its ticket record goes with its leaves
		}
		voided++
		if v := p.tx.Bucket(bucketTickets).Get(tk); v != nil {
			if rec, err := decodeTicketRecord(v); err == nil && len(rec.Leaves) == 0 {
				if err := p.addN(metaFoldedTickets, rec.Charged, 1); err != nil {
					return err
				}
				if err := p.del(bucketTickets, tk); err != nil {
					return err
				}
			}
		}
	}
	if len(dels) == 0 {
		return nil
	}
	return p.addN(metaFoldedHolds, released, voided, charged)
}

// FoldedDay is one account's ledger entries of one UTC day, folded into
// their sums once they were older than the retention and covered by
// aggregates every upstream confirmed.
type FoldedDay struct {
	Account     string         `json:"account"`
	Day         int64          `json:"day_ms"` // the day's start, Unix ms UTC
	Charges     metering.Nanos `json:"charges_nanos"`
	TopUps      metering.Nanos `json:"top_ups_nanos"`
	Adjustments metering.Nanos `json:"adjustments_nanos"`
	Entries     uint64         `json:"entries"`
	FirstSeq    uint64         `json:"first_seq"`
	LastSeq     uint64         `json:"last_seq"`
}

func (f *FoldedDay) add(e metering.Entry) error {
	var err error
	switch e.Kind {
	case metering.EntryCharge:
		f.Charges, err = f.Charges.Add(e.Amount)
	case metering.EntryTopUp:
		f.TopUps, err = f.TopUps.Add(e.Amount)
	default:
		f.Adjustments, err = f.Adjustments.Add(e.Amount)
	}
	if f.Entries == 0 || e.Seq < f.FirstSeq {
		f.FirstSeq = e.Seq
	}
	f.LastSeq = max(f.LastSeq, e.Seq)
	f.Entries++
	return err
}

func (f FoldedDay) encode() []byte {
	return metering.NewStateWriter().String(f.Account).Int(f.Day).Int(int64(f.Charges)).Int(int64(f.TopUps)).
		Int(int64(f.Adjustments)).Uint(f.Entries).Uint(f.FirstSeq).Uint(f.LastSeq)
}

func decodeFoldedDay(b []byte) (FoldedDay, error) {
	r := metering.NewStateReader(b, "folded day")
	f := FoldedDay{Account: r.String(), Day: r.Int(), Charges: metering.Nanos(r.Int()), TopUps: metering.Nanos(r.Int()),
		Adjustments: metering.Nanos(r.Int()), Entries: r.Uint(), FirstSeq: r.Uint(), LastSeq: r.Uint()}
	return f, r.Done()
}

// FoldedDays returns an account's folded days, oldest first.
func (bk *Books) FoldedDays(account string) ([]FoldedDay, error) {
	st := bk.st
	out := []FoldedDay{}
	err := st.View(func(tx *bolt.Tx) error {
		prefix := []byte(account + "\x00")
		c := tx.Bucket(bucketFolded).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			f, err := decodeFoldedDay(v)
			if err != nil {
				return err
			}
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

// counters reads n 8-byte counters under key.
func counters(meta *bolt.Bucket, key []byte, n int) []uint64 {
	out := make([]uint64, n)
	v := meta.Get(key)
	for i := range out {
		if len(v) >= 8*(i+1) {
			out[i] = binary.BigEndian.Uint64(v[8*i:])
		}
	}
	return out
}

// ticketKey turns a leaf's "device/seq" into the tickets bucket's key.
func ticketKey(ref []byte) []byte {
	i := bytes.LastIndexByte(ref, '/')
	if i <= 0 {
		return nil
	}
	var seq uint64
	for _, c := range ref[i+1:] {
		if c < '0' || c > '9' {
			return nil
		}
		seq = seq*10 + uint64(c-'0')
	}
	return seqKey(seq, string(ref[:i]))
}

// removeLeaf returns a ticket's leaf list without leaf.
func removeLeaf(list, leaf []byte) []byte {
	var out []byte
	for len(list) > 0 {
		n, w := binary.Uvarint(list)
		if w <= 0 || uint64(len(list)-w) < n {
			return out
		}
		k := list[w : w+int(n)]
		if !bytes.Equal(k, leaf) {
			out = append(binary.AppendUvarint(out, n), k...)
		}
		list = list[w+int(n):]
	}
	return out
}
