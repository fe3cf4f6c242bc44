package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Tx is an operation's view of the write transaction. It reads through
// Bolt and writes through Put and Delete, which the store also records in
// the batch's journal record: a batch of such writes is durable once its
// record is, and reaches the state file at the next checkpoint. An
// operation that needs bbolt's own writes (creating buckets, migrating)
// takes the transaction from Raw: its batch is then made durable by a
// checkpoint, not by the journal. Writing through Bolt's transaction is a
// bug: the write would be neither journaled nor checkpointed at once.
type Tx struct {
	tx  *bolt.Tx
	rec *record
	raw bool
}

// Bolt is the transaction to read with.
func (t *Tx) Bolt() *bolt.Tx { return t.tx }

// Raw is the transaction to write with directly; the batch ends with a
// checkpoint.
func (t *Tx) Raw() *bolt.Tx {
	t.raw = true
	return t.tx
}

// Put sets key to val in bucket, which must exist. Like bbolt's, key and
// val must stay unchanged until the store's next checkpoint: they are
// kept, not copied. A failed write is ErrAbort.
func (t *Tx) Put(bucket, key, val []byte) error {
	b := t.tx.Bucket(bucket)
	if b == nil {
		return fmt.Errorf("%w: no bucket %q", ErrAbort, bucket)
	}
	if err := b.Put(key, val); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAbort, bucket, err)
	}
	t.rec.add(opPut, bucket, key, val)
	return nil
}

// Delete removes key from bucket, which must exist. A failed write is
// ErrAbort.
func (t *Tx) Delete(bucket, key []byte) error {
	b := t.tx.Bucket(bucket)
	if b == nil {
		return fmt.Errorf("%w: no bucket %q", ErrAbort, bucket)
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAbort, bucket, err)
	}
	t.rec.add(opDelete, bucket, key, nil)
	return nil
}

// The journal's write operations.
const (
	opPut    = 1
	opDelete = 2
)

// record is one batch's journal record being made: its writes, in order.
type record struct {
	buf []byte // the header's room, then the body
	n   int    // writes
}

// recordHeader is a record's length (4 bytes), its CRC-32C (4), its
// generation (8) and its seq (8); the writes follow.
const recordHeader = 24

func (r *record) reset() {
	r.buf = append(r.buf[:0], make([]byte, recordHeader)...)
	r.n = 0
}

func (r *record) add(op byte, bucket, key, val []byte) {
	r.buf = append(r.buf, op)
	r.buf = binary.AppendUvarint(r.buf, uint64(len(bucket)))
	r.buf = append(r.buf, bucket...)
	r.buf = binary.AppendUvarint(r.buf, uint64(len(key)))
	r.buf = append(r.buf, key...)
	if op == opPut {
		r.buf = binary.AppendUvarint(r.buf, uint64(len(val)))
		r.buf = append(r.buf, val...)
	}
	r.n++
}
