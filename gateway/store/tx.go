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

// The journal's write operations. In a record a write is one byte, its
// kind in the top two bits and its bucket's number in the record in the
// low six, then its key and, for a put, its value, each length-prefixed.
// A bucket gets its number by a definition (kind 0) the first time the
// record names it.
const (
	opDefine = 0
	opPut    = 1
	opDelete = 2
)

// write is one write of a batch.
type write struct {
	op               byte
	bucket, key, val []byte
}

// record is one batch's journal record being made. A key written twice in
// the batch is recorded once, with its last write: state a batch's
// tickets share (an account, its window) costs the journal once per
// batch, not once per ticket.
type record struct {
	writes []write
	last   map[string]int // bucket 0 key → its write's index in writes
	key    []byte         // scratch for last's keys
	n      int            // writes made, with repeats
	buf    []byte         // the encoded record
}

// recordHeader is a record's length (4 bytes), its CRC-32C (4), its
// generation (8) and its seq (8); the writes follow.
const recordHeader = 24

func (r *record) reset() {
	clear(r.writes) // drop the references to the batch's bytes
	r.writes, r.n = r.writes[:0], 0
	clear(r.last)
}

func (r *record) add(op byte, bucket, key, val []byte) {
	if r.last == nil {
		r.last = map[string]int{}
	}
	r.key = append(append(append(r.key[:0], bucket...), 0), key...)
	r.n++
	if i, ok := r.last[string(r.key)]; ok {
		r.writes[i].op, r.writes[i].val = op, val
		return
	}
	r.last[string(r.key)] = len(r.writes)
	r.writes = append(r.writes, write{op: op, bucket: bucket, key: key, val: val})
}

// encode makes the record's bytes, its header's room first.
func (r *record) encode() ([]byte, error) {
	b := append(r.buf[:0], make([]byte, recordHeader)...)
	var names [][]byte
	for _, w := range r.writes {
		num := -1
		for i, n := range names {
			if string(n) == string(w.bucket) {
				num = i
				break
			}
		}
		if num < 0 {
			if len(names) == maxBuckets {
				return nil, fmt.Errorf("%w: a batch writes to more than %d buckets", ErrJournal, maxBuckets)
			}
			num = len(names)
			names = append(names, w.bucket)
			b = append(b, opDefine)
			b = appendField(b, w.bucket)
		}
		b = append(b, w.op<<6|byte(num))
		b = appendField(b, w.key)
		if w.op == opPut {
			b = appendField(b, w.val)
		}
	}
	r.buf = b
	return b, nil
}

// maxBuckets is the most buckets one record names.
const maxBuckets = 64

func appendField(b, f []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(f))), f...)
}
