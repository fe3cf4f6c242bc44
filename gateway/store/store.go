// Package store keeps the gateway's state in one bbolt file and commits it
// in groups: many operations share one transaction and one fsync.
//
// The store knows bytes, not tickets: an operation is a function run
// inside the write transaction, and package ledger, which owns the
// buckets and their layout, decides what it writes. Invariants:
//
//   - One goroutine, the committer, owns the write transaction. It takes
//     whatever operations are queued (at most Options.MaxBatch), runs them in
//     order, makes their writes durable, and only then reports each
//     operation's result. An operation's result is never reported before
//     its writes are on disk.
//   - A batch's writes are durable in one of two ways. Written through
//     Tx.Put and Tx.Delete, they go to the journal (journal.go): one
//     record appended and synced per batch, while the bbolt transaction
//     stays open across batches and is committed at a checkpoint, which
//     writes the pages of many batches once. A batch with an operation
//     that wrote through Tx.Raw ends with a checkpoint instead. So a
//     ticket costs the disk its journal record, not a dozen rewritten
//     B+tree pages (the wear rows of farthing bench).
//   - An operation that returns an error must not have written anything:
//     operations check first and write last. One that fails while writing
//     returns ErrAbort (or panics), and the whole batch is rolled back. If
//     the batch cannot be made durable, every operation of it gets the
//     error and nothing of the batch is on disk or in the state that later
//     batches read.
//   - Reads (View) see every write whose operation has returned: the
//     committed file when nothing waits for a checkpoint, else the
//     committer's transaction. Scan checkpoints first, then reads the file
//     beside the committer: for reads too long to hold the committer.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors.
var (
	// ErrClosed: the store is closed or closing; the operation did not run.
	ErrClosed = errors.New("store: closed")
	// ErrCommit wraps a batch that could not be made durable: nothing of
	// it is on disk.
	ErrCommit = errors.New("store: commit failed")
	// ErrAbort, returned (wrapped) by an operation that may have written
	// part of its effects, rolls the whole batch back: every operation of
	// it then fails with ErrCommit. A panicking operation aborts too.
	ErrAbort = errors.New("store: batch aborted")
	// ErrLocked: another process (a running daemon) has the file open.
	ErrLocked = errors.New("store: locked by another process")
)

// Defaults of Options.
const (
	DefaultMaxBatch        = 512
	DefaultCheckpointEvery = time.Minute
	DefaultJournalBytes    = 4 << 20
)

// Options configure a store. The zero value works.
type Options struct {
	// MaxBatch is the most operations in one batch; default 512.
	MaxBatch int
	// Linger is how long the committer waits for more operations after the
	// first of a batch; default 0: it takes what is queued, so at low load
	// a ticket waits for one sync, and at high load the batch grows while
	// the previous sync runs. A ticket waits at most Linger plus two
	// commits. With Gap set, Linger is the most it waits.
	Linger time.Duration
	// Gap, if set, makes the wait adaptive. The committer waits only when
	// the batch's first operation came within Linger of the last commit
	// (the gateway is busy: an idle one commits a lone ticket at once),
	// and then only while they keep coming, each within Gap of the one before, for at
	// most Linger after the first. So a stream of operations that arrive
	// one by one (a transport handing over its tickets as it decrypts and
	// checks them, on a core it shares with the committer) shares commits
	// instead of paying an fsync each.
	Gap time.Duration
	// CheckpointEvery is the longest a journaled batch waits for the
	// checkpoint that writes it into the state file; default 1 minute.
	// JournalBytes checkpoints sooner, once the journal holds that much;
	// default 4 MiB. Both bound the replay after a crash and the memory
	// the open transaction holds.
	CheckpointEvery time.Duration
	JournalBytes    int64
	// QueueLen bounds the queue of operations; default 4096. Do blocks (up
	// to its context) when the queue is full.
	QueueLen int
	// ReadOnly opens the file for reading only (for inspection). A journal
	// a killed gateway left is replayed first, which needs the file
	// writable once.
	ReadOnly bool
	// NoSync skips fsync. For tests of things other than durability only.
	NoSync bool
	// OnCommit, if set, is called by the committer after every durable
	// batch with the number of operations and how long it took.
	OnCommit func(ops int, took time.Duration)
	// OnCheckpoint, if set, is called by the committer after every
	// checkpoint; reads from it (View, Scan) see the state file.
	OnCheckpoint func()
}

// Op is an operation run inside the write transaction. It must not keep
// tx or slices from it, and must not write anything if it returns an error.
type Op func(tx *Tx) error

type request struct {
	op         Op
	done       chan error
	checkpoint bool // a request for a checkpoint; op is nil
}

// Store is an open state file.
type Store struct {
	db    *bolt.DB
	opts  Options
	queue chan request
	wg    sync.WaitGroup // the committer
	once  sync.Once

	mu     sync.RWMutex // guards closed against Do's send
	closed bool

	// The committer's own: the open transaction, the journal, the batch's
	// record, and an error that stops every later batch.
	cur    *bolt.Tx
	j      *journal
	rec    record
	broken error
	// pending is true while journaled batches wait for a checkpoint: reads
	// then go through the committer.
	pending  atomic.Bool
	recovery Recovery

	// Statistics, read with Stats.
	commits, ops, syncs, checkpoints atomic.Uint64
	journalBytes                     atomic.Uint64
	lastBatch                        atomic.Int64
	size                             atomic.Int64
}

// Open opens or creates the state file at path, replays what its journal
// holds beyond the file's last checkpoint, and starts the committer.
func Open(path string, opts Options) (*Store, error) {
	if opts.ReadOnly {
		return openReadOnly(path, opts)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.JournalBytes <= 0 {
		opts.JournalBytes = DefaultJournalBytes
	}
	db, err := openBolt(path, false, opts.NoSync)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, opts: opts, queue: make(chan request, opts.QueueLen)}
	if err := s.recover(); err != nil {
		db.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.committer()
	releaseMapped(db)
	s.updateSize()
	return s, nil
}

// openBolt opens the bbolt file. The freelist is not written at every
// commit (NoFreelistSync): bbolt rebuilds it when the file opens. Commits
// write fewer pages; nothing of the data's durability changes.
func openBolt(path string, readOnly, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: readOnly, NoSync: noSync,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (a running farthingd?)", ErrLocked, path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// openReadOnly opens the file for reading. A journal with records not yet
// in the file (its gateway was killed) is replayed first, through a
// writable open that checkpoints and closes.
func openReadOnly(path string, opts Options) (*Store, error) {
	db, err := openBolt(path, true, false)
	if err != nil {
		return nil, err
	}
	waiting, err := journalWaiting(db)
	if err != nil || waiting {
		db.Close()
		if err != nil {
			return nil, err
		}
		w, err := Open(path, Options{NoSync: opts.NoSync})
		if err != nil {
			return nil, fmt.Errorf("store: %s has journaled batches to replay, which needs it writable: %w", path, err)
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		if db, err = openBolt(path, true, false); err != nil {
			return nil, err
		}
	}
	s := &Store{db: db, opts: opts}
	releaseMapped(db)
	s.updateSize()
	return s, nil
}

// journalWaiting is whether the journal beside db's file holds records
// beyond its last checkpoint.
func journalWaiting(db *bolt.DB) (bool, error) {
	f, err := os.Open(JournalPath(db.Path()))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrJournal, err)
	}
	defer f.Close()
	var gen, seq uint64
	db.View(func(tx *bolt.Tx) error { gen, seq = checkpointMark(tx); return nil })
	found := false
	_, err = eachRecord(f, gen, seq, func([]byte, int64) error { found = true; return io.EOF })
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return found, err
}

// recover opens the journal and replays its records beyond the file's
// last checkpoint into a checkpoint of their own; a file that never had a
// checkpoint gets its first.
func (s *Store) recover() error {
	j, err := openJournal(s.db.Path())
	if err != nil {
		return err
	}
	s.j = j
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	gen, seq := checkpointMark(tx)
	n, last, _, torn, err := replay(j.f, gen, seq, tx)
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("store: %s: %w", s.db.Path(), err)
	}
	s.recovery = Recovery{Batches: n, Torn: torn}
	j.gen, j.seq, j.noSync = gen, last, s.opts.NoSync
	if n == 0 && gen != 0 {
		return tx.Rollback()
	}
	return s.commitCheckpoint(tx)
}

// Recovery is what opening the file found in its journal: the batches
// replayed into the file (its gateway stopped without a checkpoint: a
// kill, a power cut), and whether a torn record ended them (a batch being
// written when it stopped, never answered, so not replayed).
type Recovery struct {
	Batches int
	Torn    bool
}

// Recovery returns what opening the file found in its journal.
func (s *Store) Recovery() Recovery { return s.recovery }

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

// Do runs op in a group commit and returns once its writes are durable,
// or with its error. If ctx ends before op is queued, op never runs; once
// queued, Do waits for the result regardless of ctx, so a caller never
// mistakes a committed operation for a failed one.
func (s *Store) Do(ctx context.Context, op Op) error {
	done, err := s.Enqueue(ctx, op)
	if err != nil {
		return err
	}
	return <-done
}

// Enqueue queues op for a group commit and returns at once with the
// channel that delivers its result once its writes are durable. Operations
// run in the order they were queued, so a caller that queues several in
// turn may wait for them later and in any order. If ctx ends before op is
// queued, op never runs and Enqueue returns ctx's error.
func (s *Store) Enqueue(ctx context.Context, op Op) (<-chan error, error) {
	return s.send(ctx, request{op: op, done: make(chan error, 1)})
}

func (s *Store) send(ctx context.Context, r request) (<-chan error, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.opts.ReadOnly {
		return nil, ErrClosed
	}
	select {
	case s.queue <- r:
		return r.done, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// View runs fn in a read-only view of the state every returned operation
// wrote: the committed file when no journaled batch waits for a
// checkpoint, else the committer's transaction, between batches. fn must
// not write, and should be short: it holds the committer.
func (s *Store) View(fn func(tx *bolt.Tx) error) error {
	if !s.pending.Load() {
		return s.db.View(fn)
	}
	var ferr error
	err := s.Do(context.Background(), func(tx *Tx) error {
		ferr = fn(tx.Bolt())
		return nil
	})
	if err != nil {
		return err
	}
	return ferr
}

// Scan runs fn in a read-only transaction on the state file after a
// checkpoint, beside the committer: for long reads.
func (s *Store) Scan(fn func(tx *bolt.Tx) error) error {
	if err := s.Checkpoint(context.Background()); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return s.db.View(fn)
}

// Checkpoint writes every journaled batch into the state file and
// returns once it is durable there.
func (s *Store) Checkpoint(ctx context.Context) error {
	if !s.pending.Load() {
		return nil
	}
	done, err := s.send(ctx, request{checkpoint: true, done: make(chan error, 1)})
	if err != nil {
		return err
	}
	return <-done
}

// committer is the one goroutine that writes. It exits when the queue is
// closed and drained, after a last checkpoint.
func (s *Store) committer() {
	defer s.wg.Done()
	defer s.closeJournal()
	batch := make([]request, 0, s.opts.MaxBatch)
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for {
		idleSince := time.Now()
		if !s.j.since.IsZero() {
			due.Reset(time.Until(s.j.since.Add(s.opts.CheckpointEvery)))
		}
		var r request
		var ok bool
		select {
		case r, ok = <-s.queue:
		case <-due.C:
			if s.checkpointDue() {
				s.timedCheckpoint()
			}
			continue
		}
		due.Stop()
		if !ok {
			return
		}
		// Busy: the first operation came within Linger of the last commit.
		busy := time.Since(idleSince) < s.opts.Linger
		batch = append(batch[:0], r)
		batch = s.fill(batch, wait, busy || s.opts.Gap == 0)
		s.commit(batch)
	}
}

// checkpointDue is whether the journal's oldest record has waited
// CheckpointEvery: under a steady load the committer is never idle for
// its timer, and a batch with writes checkpoints instead.
func (s *Store) checkpointDue() bool {
	return !s.j.since.IsZero() && time.Since(s.j.since) >= s.opts.CheckpointEvery
}

// timedCheckpoint is the checkpoint CheckpointEvery asks for.
func (s *Store) timedCheckpoint() {
	if s.broken != nil {
		return
	}
	if err := s.checkpoint(); err != nil {
		s.recoverFrom(err)
	}
}

// closeJournal checkpoints what waits and removes the journal, which the
// file then no longer needs; after a failed checkpoint it is kept, to be
// replayed when the file opens again.
func (s *Store) closeJournal() {
	err := s.broken
	if err == nil {
		err = s.checkpoint()
	}
	if s.cur != nil {
		s.cur.Rollback()
		s.cur = nil
	}
	s.j.f.Close()
	if err == nil {
		os.Remove(JournalPath(s.db.Path()))
	}
}

// fill adds to batch what is queued and, if linger and with Linger or Gap
// set, what comes while it waits (see Options), up to MaxBatch.
func (s *Store) fill(batch []request, wait *time.Timer, linger bool) []request {
	deadline := time.Now()
	if linger {
		deadline = deadline.Add(s.opts.Linger)
	}
	for len(batch) < s.opts.MaxBatch {
		select {
		case r, ok := <-s.queue:
			if !ok {
				return batch
			}
			batch = append(batch, r)
			continue
		default:
		}
		left := time.Until(deadline)
		if s.opts.Gap > 0 {
			left = min(left, s.opts.Gap)
		}
		if !linger || left <= 0 {
			return batch
		}
		wait.Reset(left)
		select {
		case r, ok := <-s.queue:
			wait.Stop()
			if !ok {
				return batch
			}
			batch = append(batch, r)
		case <-wait.C:
			return batch
		}
	}
	return batch
}

// commit runs a batch in the open transaction and makes it durable: its
// journal record, or a checkpoint when an operation wrote through Raw,
// when asked for, or when the journal is full.
func (s *Store) commit(batch []request) {
	start := time.Now()
	results := make([]error, len(batch))
	wrote, err := s.run(batch, results)
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrCommit, err)
		for i := range results {
			results[i] = err
		}
	}
	s.ops.Add(uint64(len(batch)))
	if wrote {
		s.commits.Add(1)
		s.lastBatch.Store(int64(len(batch)))
		s.updateSize()
		if s.opts.OnCommit != nil {
			s.opts.OnCommit(len(batch), time.Since(start))
		}
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// run runs the batch's operations into results and makes their writes
// durable, saying whether it wrote anything (a batch of reads and
// refusals does not); an error is the whole batch's, after which the open
// transaction holds exactly the journal's records again.
func (s *Store) run(batch []request, results []error) (wrote bool, err error) {
	if s.broken != nil {
		return true, s.broken
	}
	if s.cur == nil {
		tx, err := s.db.Begin(true)
		if err != nil {
			return true, err
		}
		s.cur = tx
	}
	s.rec.reset()
	raw, asked := false, false
	for i, r := range batch {
		if r.checkpoint {
			asked = true
			continue
		}
		tx := Tx{tx: s.cur, rec: &s.rec}
		results[i] = runOp(r.op, &tx)
		raw = raw || tx.raw
		if errors.Is(results[i], ErrAbort) {
			return true, s.recoverFrom(results[i])
		}
	}
	switch {
	case raw || asked || (s.rec.n > 0 && s.checkpointDue()):
		wrote, err = true, s.checkpoint()
	case s.rec.n > 0:
		wrote, err = true, s.appendRecord()
	}
	if err != nil {
		return true, s.recoverFrom(err)
	}
	return wrote, nil
}

// appendRecord appends the batch's record to the journal, or
// checkpoints instead when the journal would pass JournalBytes.
func (s *Store) appendRecord() error {
	b, err := s.rec.encode()
	if err != nil {
		return err
	}
	if s.j.off+int64(len(b)) > s.opts.JournalBytes {
		return s.checkpoint()
	}
	if err := s.j.append(b); err != nil {
		return err
	}
	if !s.opts.NoSync {
		s.syncs.Add(1)
	}
	s.journalBytes.Add(uint64(len(b)))
	s.pending.Store(true)
	return nil
}

// checkpoint commits the open transaction, with the journal's last seq
// and a new generation, and starts the journal again. With nothing
// written since the last one it only closes the transaction.
func (s *Store) checkpoint() error {
	tx := s.cur
	if tx == nil {
		return nil
	}
	s.cur = nil
	if !s.j.pending() && s.rec.n == 0 && !txWrote(tx) {
		return tx.Rollback()
	}
	if err := s.commitCheckpoint(tx); err != nil {
		return err
	}
	if s.opts.OnCheckpoint != nil {
		s.opts.OnCheckpoint()
	}
	return nil
}

// commitCheckpoint commits tx as a checkpoint of every journal record.
func (s *Store) commitCheckpoint(tx *bolt.Tx) error {
	gen, err := markCheckpoint(tx, s.j.seq)
	if err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if !s.opts.NoSync {
		s.syncs.Add(2) // bbolt syncs the pages, then the meta page
	}
	s.checkpoints.Add(1)
	s.j.restart(gen)
	s.pending.Store(false)
	return nil
}

// txWrote is whether tx changed anything: bbolt materialises a node for
// every page a write touches.
func txWrote(tx *bolt.Tx) bool {
	st := tx.Stats()
	return st.GetNodeCount() > 0
}

// recoverFrom rebuilds the open transaction from the state file and the
// journal's durable records after err made the batch fail: what the
// batch wrote is dropped. If even that fails, every later batch fails.
func (s *Store) recoverFrom(err error) error {
	if s.cur != nil {
		s.cur.Rollback()
		s.cur = nil
	}
	tx, berr := s.db.Begin(true)
	if berr == nil {
		gen, seq := checkpointMark(tx)
		var last uint64
		var off int64
		_, last, off, _, berr = replay(s.j.f, gen, seq, tx)
		if berr == nil && (last != s.j.seq || off != s.j.off) {
			berr = fmt.Errorf("%w: replayed through seq %d, offset %d; wrote %d, %d", ErrJournal, last, off, s.j.seq, s.j.off)
		}
		if berr != nil {
			tx.Rollback()
		} else {
			s.cur = tx
		}
	}
	if berr != nil {
		s.broken = fmt.Errorf("%w: the store stopped after %v: rebuilding its state failed: %v", ErrCommit, err, berr)
	}
	return err
}

// runOp runs one operation, turning a panic into an error so that one bad
// operation cannot take the batch down with it.
func runOp(op Op, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: operation panicked: %v", ErrAbort, p)
		}
	}()
	return op(tx)
}

func (s *Store) updateSize() {
	if fi, err := os.Stat(s.db.Path()); err == nil {
		s.size.Store(fi.Size())
	}
}

// Stats are the committer's counters. Commits counts the batches that
// wrote (a journal record or a checkpoint), Ops every operation run;
// Syncs counts the fdatasyncs of the state file and its journal;
// JournalBytes what was appended to the journal.
type Stats struct {
	Commits, Ops, Syncs, Checkpoints, JournalBytes uint64
	LastBatch                                      int64
	FileBytes                                      int64
}

// WriteBackup writes a consistent copy of the whole file to w, from one
// read transaction after a checkpoint (commits go on meanwhile), and
// returns its size.
func (s *Store) WriteBackup(w io.Writer) (int64, error) {
	var n int64
	err := s.Scan(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Compact writes a compacted copy of the file at src (which no process
// may have open) to dst, a new file: free pages are left out and pages
// are filled. A journal src's gateway left is replayed into src first.
func Compact(dst, src string) error {
	if s, err := Open(src, Options{ReadOnly: true}); err != nil {
		return err
	} else if err := s.Close(); err != nil {
		return err
	}
	sdb, err := openBolt(src, true, false)
	if err != nil {
		return err
	}
	defer sdb.Close()
	ddb, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("store: create %s: %w", dst, err)
	}
	if err := bolt.Compact(ddb, sdb, 64<<20); err != nil {
		ddb.Close()
		return fmt.Errorf("store: compact: %w", err)
	}
	return ddb.Close()
}

// Usage is how the file's bytes are used: FileBytes in all, FreeBytes in
// pages on the freelist (reused by later writes before the file grows).
type Usage struct {
	FileBytes, FreeBytes int64
}

// InUse is the bytes that hold data: the file less its free pages.
func (u Usage) InUse() int64 { return u.FileBytes - u.FreeBytes }

// Usage reads the file's size and its free pages.
func (s *Store) Usage() Usage {
	st := s.db.Stats()
	u := Usage{FreeBytes: int64(st.FreeAlloc)}
	if fi, err := os.Stat(s.db.Path()); err == nil {
		u.FileBytes = fi.Size()
	}
	return u
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Ops: s.ops.Load(), Syncs: s.syncs.Load(), Checkpoints: s.checkpoints.Load(),
		JournalBytes: s.journalBytes.Load(), LastBatch: s.lastBatch.Load(), FileBytes: s.size.Load()}
}

// Close stops taking operations, lets the committer finish every queued
// one and checkpoint, and closes the file.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		if !s.opts.ReadOnly {
			close(s.queue)
		}
		s.mu.Unlock()
		s.wg.Wait()
		err = s.db.Close()
	})
	return err
}
