package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The journal is the durable record of the batches committed since the
// state file's last checkpoint: a file beside it (JournalPath) of records,
// one per batch, each the batch's writes. Invariants:
//
//   - A batch's record is written and synced before any of its results is
//     reported; the state file takes the same writes at the next
//     checkpoint, one bbolt commit for many batches.
//   - A checkpoint commits, in the same bbolt transaction as the writes it
//     makes durable, the seq of the last record it holds and a new random
//     generation. Records carry the generation they were written under and
//     consecutive seqs, so on opening only the records of the state file's
//     generation, from its seq + 1 on and without a gap, are replayed: a
//     record already in the state file, a journal left from another state
//     file (a restored backup, an older copy) or bytes of an older
//     generation further on are never applied.
//   - After a checkpoint the next record is written at the file's start:
//     the file does not grow past the most written between checkpoints.
//     A torn record (a crash while it was written) fails its checksum and
//     ends the replay; it was never reported.
//   - A cleanly closed store checkpoints and removes its journal.
var (
	// ErrJournal wraps a journal that cannot be read or replayed.
	ErrJournal = errors.New("store: journal")

	bucketJournal = []byte("journal")
	keyGen        = []byte("generation")
	keySeq        = []byte("seq")

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// maxRecord bounds a record's length when it is read back.
const maxRecord = 1 << 30

// JournalPath is the journal of the state file at path.
func JournalPath(path string) string { return path + ".journal" }

// journal is the open journal file.
type journal struct {
	f     *os.File
	off   int64  // where the next record goes: the end of the last durable one
	gen   uint64 // the state file's generation, which records carry
	seq   uint64 // the last record's seq (the checkpoint's, with none since)
	since time.Time
	// noSync skips the sync (Options.NoSync: tests of other things).
	noSync bool
}

// openJournal opens (or creates) the journal of the state file at path.
func openJournal(path string) (*journal, error) {
	jp := JournalPath(path)
	_, statErr := os.Stat(jp)
	f, err := os.OpenFile(jp, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrJournal, err)
	}
	if os.IsNotExist(statErr) {
		if err := syncDir(filepath.Dir(jp)); err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %v", ErrJournal, err)
		}
	}
	return &journal{f: f}, nil
}

// append writes a batch's record, b from record.encode, and syncs it.
func (j *journal) append(b []byte) error {
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(b)-8))
	binary.LittleEndian.PutUint64(b[8:16], j.gen)
	binary.LittleEndian.PutUint64(b[16:24], j.seq+1)
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(b[8:], castagnoli))
	if _, err := j.f.WriteAt(b, j.off); err != nil {
		return j.undo(err)
	}
	if !j.noSync {
		if err := datasync(j.f); err != nil {
			return j.undo(err)
		}
	}
	j.off += int64(len(b))
	j.seq++
	if j.since.IsZero() {
		j.since = time.Now()
	}
	return nil
}

// undo drops a record that could not be made durable, so that no replay
// finds it: the file is cut back to the last durable record.
func (j *journal) undo(err error) error {
	if terr := j.f.Truncate(j.off); terr != nil {
		return fmt.Errorf("%w: %v (and cutting it back: %v)", ErrJournal, err, terr)
	}
	return fmt.Errorf("%w: %v", ErrJournal, err)
}

// restart begins the journal again at its start after a checkpoint that
// holds every record, under generation gen.
func (j *journal) restart(gen uint64) {
	j.off, j.gen, j.since = 0, gen, time.Time{}
}

// pending is whether records wait for a checkpoint.
func (j *journal) pending() bool { return j.off > 0 }

// replay reads the records of generation gen after seq, in order, and
// applies each one's writes to tx. It returns how many it applied, the
// last one's seq, the offset after it, and whether a torn record ended
// them.
func replay(f *os.File, gen, seq uint64, tx *bolt.Tx) (n int, last uint64, off int64, torn bool, err error) {
	last = seq
	torn, err = eachRecord(f, gen, seq, func(body []byte, end int64) error {
		if err := applyRecord(tx, body); err != nil {
			return err
		}
		n, last, off = n+1, last+1, end
		return nil
	})
	return n, last, off, torn, err
}

// eachRecord calls fn with the writes of each record of generation gen,
// from seq + 1 on without a gap, and where it ends in the file. It stops
// at the first record that is torn (torn is true: a record of the
// sequence cut short, whose batch was never answered), of another
// generation or out of sequence; and refuses a damaged record that a
// whole one follows.
func eachRecord(f *os.File, gen, seq uint64, fn func(body []byte, end int64) error) (torn bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrJournal, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("%w: %v", ErrJournal, err)
	}
	rd := bufio.NewReaderSize(f, 1<<16)
	var off int64
	var hdr [recordHeader]byte
	for want := seq + 1; ; want++ {
		if _, err := io.ReadFull(rd, hdr[:]); err != nil {
			return false, nil // the end (a header cut short is not told from old bytes)
		}
		// A length past the file's end is a torn header: nothing is
		// allocated for it.
		size := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		ours := binary.LittleEndian.Uint64(hdr[8:16]) == gen && binary.LittleEndian.Uint64(hdr[16:24]) == want
		if size < recordHeader-8 || size > maxRecord || off+8+size > fi.Size() || !ours {
			return ours, nil
		}
		body := make([]byte, size-(recordHeader-8))
		if _, err := io.ReadFull(rd, body); err != nil {
			return true, nil
		}
		if !sumOK(hdr[:], body) {
			// Torn, if it is the last: its batch was never answered. With
			// the next record whole after it, it was answered and then
			// damaged: nothing may be replayed past it, nor silently left.
			if wholeRecordAt(f, off+8+size, gen, want+1, fi.Size()) {
				return false, fmt.Errorf("%w: record %d (at byte %d) is damaged and record %d after it is whole: the journal was damaged after it was written, not torn by a stop",
					ErrJournal, want, off, want+1)
			}
			return true, nil
		}
		off += 8 + size
		if err := fn(body, off); err != nil {
			return false, err
		}
	}
}

// sumOK checks a record's CRC-32C: over its generation, seq and writes.
func sumOK(hdr, body []byte) bool {
	sum := crc32.Update(crc32.Checksum(hdr[8:recordHeader], castagnoli), castagnoli, body)
	return sum == binary.LittleEndian.Uint32(hdr[4:8])
}

// wholeRecordAt is whether a whole record of generation gen and seq seq
// starts at byte at of f, whose size is size.
func wholeRecordAt(f *os.File, at int64, gen, seq uint64, size int64) bool {
	var hdr [recordHeader]byte
	if at+recordHeader > size {
		return false
	}
	if _, err := f.ReadAt(hdr[:], at); err != nil {
		return false
	}
	n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
	if n < recordHeader-8 || at+8+n > size || binary.LittleEndian.Uint64(hdr[8:16]) != gen || binary.LittleEndian.Uint64(hdr[16:24]) != seq {
		return false
	}
	body := make([]byte, n-(recordHeader-8))
	if _, err := f.ReadAt(body, at+recordHeader); err != nil {
		return false
	}
	return sumOK(hdr[:], body)
}

// applyRecord applies one record's writes to tx.
func applyRecord(tx *bolt.Tx, body []byte) error {
	short := fmt.Errorf("%w: a record's write is cut short", ErrJournal)
	var names []*bolt.Bucket
	for len(body) > 0 {
		op, num := body[0]>>6, int(body[0]&(maxBuckets-1))
		body = body[1:]
		var name, key, val []byte
		var ok bool
		if op == opDefine {
			if name, body, ok = field(body); !ok {
				return short
			}
			b := tx.Bucket(name)
			if b == nil {
				return fmt.Errorf("%w: a record writes to bucket %q, which the state file does not have", ErrJournal, name)
			}
			names = append(names, b)
			continue
		}
		if num >= len(names) {
			return fmt.Errorf("%w: a record writes to bucket number %d before naming it", ErrJournal, num)
		}
		if key, body, ok = field(body); !ok {
			return short
		}
		var err error
		switch op {
		case opPut:
			if val, body, ok = field(body); !ok {
				return short
			}
			err = names[num].Put(key, val)
		case opDelete:
			err = names[num].Delete(key)
		default:
			return fmt.Errorf("%w: a record has a write of kind %d", ErrJournal, op)
		}
		if err != nil {
			return fmt.Errorf("%w: replaying: %v", ErrJournal, err)
		}
	}
	return nil
}

// field reads a length-prefixed field.
func field(b []byte) (f, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// checkpointMark reads the generation and seq of the state file's last
// checkpoint.
func checkpointMark(tx *bolt.Tx) (gen, seq uint64) {
	if b := tx.Bucket(bucketJournal); b != nil {
		gen, seq = u64(b.Get(keyGen)), u64(b.Get(keySeq))
	}
	return gen, seq
}

// markCheckpoint records, in the checkpoint's transaction, the last
// record it holds and the generation the next records are written under.
func markCheckpoint(tx *bolt.Tx, seq uint64) (uint64, error) {
	b, err := tx.CreateBucketIfNotExists(bucketJournal)
	if err != nil {
		return 0, err
	}
	gen := rand.Uint64() | 1 // never 0, the generation of a file without a checkpoint
	if err := b.Put(keyGen, binary.BigEndian.AppendUint64(nil, gen)); err != nil {
		return 0, err
	}
	return gen, b.Put(keySeq, binary.BigEndian.AppendUint64(nil, seq))
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
