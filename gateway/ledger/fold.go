package ledger

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Late usage — a ticket whose time falls in a window that sealed already,
// a device back from an outage with its backlog — is folded: every late
// item of one slot of one (provider, account, meter) goes into one fold
// (metering.Fold), which seals as one correction at the first
// housekeeping tick at least Terms.LateFold after its first item. A
// backlog of N tickets over W windows is then at most W corrections per
// fold time, not N. A fold's Merkle leaves are keyed by its id until it
// seals ("f" 0 id index), and sealedby maps its prefix to the
// correction's aggregate seq once it has one, as for a window: proofs,
// payword segments and pruning find it the same way. Until it seals, its
// amount is in the reconciliation's late line.

// lateItem is one item of a ticket that fell in a sealed slot.
type lateItem struct {
	provider, account, meter string
	cur                      metering.Currency
	c                        metering.Correction
}

var metaFoldSeq = []byte("fold-seq")

// foldPrefix is the key prefix of fold id's leaves (and its sealedby key).
func foldPrefix(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("f\x00"), id)
}

func foldKey(l lateItem) []byte {
	return seqKey(uint64(l.c.SlotStart), l.provider, l.account, l.meter)
}

// foldLate adds a ticket's late items (src names the ticket) to their
// folds at now: it returns the leaves (one per item), their keys for the
// ticket record, and the writes of the folds (and of the fold id counter
// when a fold begins).
func foldLate(tx *bolt.Tx, lates []lateItem, src itemsOf, now int64) (leaves []write, tleaves []byte, writes []write, err error) {
	next := getU64(tx.Bucket(bucketMeta).Get(metaFoldSeq))
	counted := next
	for _, l := range lates {
		k := foldKey(l)
		var f metering.Fold
		if v := tx.Bucket(bucketLate).Get(k); v != nil {
			if err := f.UnmarshalBinary(v); err != nil {
				return nil, nil, nil, fmt.Errorf("fold %x: %w", k, err)
			}
		} else {
			next++
			f.ID = next
		}
		if err := f.Add(l.c, l.cur, now); err != nil {
			return nil, nil, nil, Reject(protocol.ReasonChargeOverflow, "late usage of meter %s: %v", l.meter, err)
		}
		b, err := f.MarshalBinary()
		if err != nil {
			return nil, nil, nil, err
		}
		leafKey := binary.BigEndian.AppendUint64(foldPrefix(f.ID), f.Tickets-1)
		leaves = append(leaves, write{bucketLeaves, leafKey, append(src.hash[:], src.ref...)})
		tleaves = append(binary.AppendUvarint(tleaves, uint64(len(leafKey))), leafKey...)
		writes = append(writes, write{bucketLate, k, b})
	}
	if next != counted {
		writes = append(writes, write{bucketMeta, metaFoldSeq, putU64(next)})
	}
	return leaves, tleaves, writes, nil
}

// LateReport is what one SealLate sealed: corrections, the late tickets
// in them, and the most any of them was late.
type LateReport struct {
	Corrections int
	Tickets     uint64
	Amount      metering.Nanos // in nanos of every currency together
	Oldest      time.Duration
}

// SealLate seals every fold whose time to fold is up at now (its first
// item at least snap.LateFold before) as a correction of its slot's last
// sealed aggregate, in one store operation.
func (bk *Books) SealLate(ctx context.Context, snap *Terms, now time.Time) (LateReport, error) {
	var rep LateReport
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		rep = LateReport{}
		tx := stx.Bolt()
		aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
		start := aggSeq
		var writes []write
		var done [][]byte
		cutoff := now.Add(-snap.LateFold).UnixMilli()
		err := tx.Bucket(bucketLate).ForEach(func(k, v []byte) error {
			var f metering.Fold
			if err := f.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("fold %x: %w", k, err)
			}
			if f.Since > cutoff {
				return nil
			}
			if len(k) < 9 {
				return fmt.Errorf("fold %x: bad key", k)
			}
			key := splitKey(k[:len(k)-9])
			if len(key) != 3 {
				return fmt.Errorf("fold %x: bad key", k)
			}
			aggSeq++
			rec := sealedRecord{Provider: key[0], Account: key[1], Meter: key[2], Sealed: f.Seal(), Fold: f.ID}
			rec.Corrects = getU64(tx.Bucket(bucketSlotIndex).Get(k))
			ws, err := bk.sealWrites(snap, aggSeq, rec, false)
			if err != nil {
				return err
			}
			writes = append(append(writes, ws...), write{bucketSealedBy, foldPrefix(f.ID), putU64(aggSeq)})
			done = append(done, append([]byte(nil), k...))
			rep.Corrections++
			rep.Tickets += f.Tickets
			rep.Amount += f.Amount
			rep.Oldest = max(rep.Oldest, time.Duration(f.Late)*time.Millisecond)
			return nil
		})
		if err != nil || len(done) == 0 {
			return err
		}
		writes = append(writes, write{bucketMeta, metaAggSeq, putU64(aggSeq)})
		if err := checkSeqs(start, aggSeq, rep.Corrections); err != nil {
			return err
		}
		if err := putAll(stx, writes); err != nil {
			return err
		}
		for _, k := range done {
			if err := stx.Delete(bucketLate, k); err != nil {
				return err
			}
		}
		return nil
	})
	return rep, err
}

// checkSeqs checks that n seals took the seqs after start, ending at end.
func checkSeqs(start, end uint64, n int) error {
	if end != start+uint64(n) {
		return broken("%d corrections sealed as seqs %d..%d", n, start+1, end)
	}
	return nil
}
