package ledger

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// upstreamKey keys an upstream's progress in the meta bucket.
func upstreamKey(name string) []byte { return []byte("upstream/" + name) }

// Outgoing is one sealed aggregate in the outbox.
type Outgoing struct {
	Seq      uint64
	Provider string
	End      time.Time // the end of its window
	Bytes    []byte    // the signed aggregate, as sealed
	// Key is the record's idempotency key, "KID.EPOCH/SEQ" of the stream
	// it was signed in (after a restore, older outbox records keep theirs).
	Key string
}

// Confirmed returns the last aggregate seq upstream name confirmed.
func (bk *Books) Confirmed(name string) (uint64, error) {
	var seq uint64
	err := bk.st.View(func(tx *bolt.Tx) error {
		seq = getU64(tx.Bucket(bucketMeta).Get(upstreamKey(name)))
		return nil
	})
	return seq, err
}

// Next returns the first aggregate in the outbox after seq cursor; false
// if there is none.
func (bk *Books) Next(cursor uint64) (Outgoing, bool, error) {
	var o Outgoing
	var ok bool
	err := bk.st.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketOutbox).Cursor().Seek(putU64(cursor + 1))
		if k == nil {
			return nil
		}
		seq := getU64(k)
		if c := tx.Bucket(bucketRecords).Get(k); c != nil {
			// A credit, hold or chain progress record: no provider (it goes to every
			// upstream that takes all providers), dated when it was made.
			r := metering.NewStateReader(c, "outbox record")
			_ = r.String() // the account
			at := r.Int()
			if err := r.Done(); err != nil {
				return fmt.Errorf("outbox %d: %w", seq, err)
			}
			o = Outgoing{Seq: seq, End: time.UnixMilli(at), Bytes: append([]byte(nil), v...)}
			o.Key, ok = bk.keyOf(o.Bytes, seq), true
			return nil
		}
		rec, err := decodeSealedRecord(tx.Bucket(bucketSealed).Get(k))
		if err != nil {
			return fmt.Errorf("outbox %d: %w", seq, err)
		}
		o = Outgoing{Seq: seq, Provider: rec.Provider, End: time.UnixMilli(rec.End), Bytes: append([]byte(nil), v...)}
		o.Key, ok = bk.keyOf(o.Bytes, seq), true
		return nil
	})
	return o, ok, err
}

// keyOf is the idempotency key of an outbox record: its own stream and
// seq, read from its bytes; the books' stream for a record that does not
// read (none should).
func (bk *Books) keyOf(b []byte, seq uint64) string {
	if s, wire, ok := recordStream(b); ok {
		return s.Key(wire)
	}
	return bk.cfg.Stream.Key(bk.wire(seq))
}

// recordStream reads the stream and seq an outbox record (an aggregate, a
// credit or a hold record) was signed in.
func recordStream(b []byte) (protocol.StreamID, uint64, bool) {
	m, err := strict.Decode(b)
	if err != nil {
		return protocol.StreamID{}, 0, false
	}
	var epoch, wire uint64
	switch {
	case m.Aggregate != nil:
		epoch, wire = m.Aggregate.Epoch, m.Aggregate.Seq
	case m.Credit != nil:
		epoch, wire = m.Credit.Epoch, m.Credit.Seq
	case m.Hold != nil:
		epoch, wire = m.Hold.Epoch, m.Hold.Seq
	case m.Progress != nil:
		epoch, wire = m.Progress.Epoch, m.Progress.Seq
	case m.Restore != nil:
		epoch, wire = m.Restore.Epoch, m.Restore.Seq
	}
	s, ok := protocol.StreamOf(m.Envelope.KeyID, epoch)
	return s, wire, ok
}

// Confirm records that upstream name confirmed every aggregate up to seq,
// and drops from the outbox every aggregate all of upstreams confirmed.
func (bk *Books) Confirm(ctx context.Context, name string, seq uint64, upstreams []string) error {
	return bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Bolt()
		meta := tx.Bucket(bucketMeta)
		if err := stx.Put(bucketMeta, upstreamKey(name), putU64(seq)); err != nil {
			return err
		}
		low := seq
		for _, n := range upstreams {
			low = min(low, getU64(meta.Get(upstreamKey(n))))
		}
		ob := tx.Bucket(bucketOutbox)
		var done [][]byte
		c := ob.Cursor()
		for k, _ := c.First(); k != nil && getU64(k) <= low; k, _ = c.Next() {
			done = append(done, append([]byte(nil), k...))
		}
		for _, k := range done {
			if err := stx.Delete(bucketOutbox, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// OldestUnforwarded is the age of the oldest aggregate still in the
// outbox (sealed, not yet confirmed by every upstream); 0 if it is empty.
func (bk *Books) OldestUnforwarded(now time.Time) time.Duration {
	var age time.Duration
	bk.st.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketOutbox).Cursor().First()
		if k == nil {
			return nil
		}
		if r, err := decodeSealedRecord(tx.Bucket(bucketSealed).Get(k)); err == nil {
			age = max(0, now.Sub(time.UnixMilli(r.End)))
		}
		return nil
	})
	return age
}

// Available is what an account can spend now: its prepaid balance or its
// remaining credit, from the books or, before its first charge, from its
// opening state in t.
func (bk *Books) Available(t *Terms, account string) int64 {
	var avail int64
	bk.st.View(func(tx *bolt.Tx) error {
		if a, err := loadAccount(tx, t, account); err == nil {
			n, _ := a.Available()
			avail = int64(n)
		}
		return nil
	})
	return avail
}
