package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

var metaPrunedThrough = []byte("pruned-through")

// maxPrunePerRun bounds the work of one pruning commit.
const maxPrunePerRun = 256

// PruneTickets deletes the raw tickets and Merkle leaves of aggregates that
// every upstream confirmed and whose window ended more than retention ago,
// in aggregate-seq order, at most maxPrunePerRun aggregates per call. A
// ticket in several aggregates (one per meter) loses its bytes when the
// last of them is pruned; its outcome stays. Without upstreams nothing is ever confirmed, so nothing is
// pruned. Receipts, ledger entries and sealed totals are kept: they are the
// books. It returns how many aggregates it pruned.
func (bk *Books) PruneTickets(ctx context.Context, upstreams []string, retention time.Duration, now time.Time) (int, error) {
	if len(upstreams) == 0 {
		return 0, nil
	}
	pruned := 0
	err := bk.st.Do(ctx, func(tx *bolt.Tx) error {
		pruned = 0
		meta := tx.Bucket(bucketMeta)
		low := uint64(1<<63 - 1)
		for _, n := range upstreams {
			low = min(low, getU64(meta.Get(upstreamKey(n))))
		}
		done := getU64(meta.Get(metaPrunedThrough))
		cutoff := now.Add(-retention).UnixMilli()
		type leafDrop struct{ key, ticket []byte }
		var drops []leafDrop
		seq := done
		for seq < low && pruned < maxPrunePerRun {
			if tx.Bucket(bucketRecords).Get(putU64(seq+1)) != nil {
				seq++ // a credit or hold record: no tickets or leaves to prune
				continue
			}
			rec, err := decodeSealedRecord(tx.Bucket(bucketSealed).Get(putU64(seq + 1)))
			if err != nil {
				return err
			}
			if rec.End > cutoff {
				break // aggregates seal in order of their windows closing: later ones are younger
			}
			seq++
			pruned++
			var prefix []byte
			if rec.Corrects != 0 || rec.Reason == 0 {
				prefix = leafKeyCorrection(seq)[:10]
			} else {
				prefix = leafWindowPrefix(joinKey(rec.Provider, rec.Account, rec.Meter), rec.Start)
			}
			c := tx.Bucket(bucketLeaves).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
				drops = append(drops, leafDrop{append([]byte(nil), k...), ticketKey(v[32:])})
			}
		}
		if seq == done {
			return nil
		}
		// Writes: drop each leaf, and the bytes of each ticket whose last
		// leaf it was; the ticket's outcome stays (it is in the books).
		leaves, tickets := tx.Bucket(bucketLeaves), tx.Bucket(bucketTickets)
		for _, d := range drops {
			if err := leaves.Delete(d.key); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
			if d.ticket == nil {
				continue
			}
			rec, err := decodeTicketRecord(tickets.Get(d.ticket))
			if err != nil {
				continue
			}
			rec.Leaves = removeLeaf(rec.Leaves, d.key)
			if len(rec.Leaves) == 0 {
				rec.Raw = nil
			}
			if err := tickets.Put(d.ticket, rec.encode()); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		if err := meta.Put(metaPrunedThrough, putU64(seq)); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		return nil
	})
	return pruned, err
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
