// Package store keeps the gateway's state in one bbolt file and commits it
// in groups: many operations share one transaction and one fsync.
//
// The store knows bytes, not tickets: an operation is a function run
// inside the write transaction, and package ledger, which owns the
// buckets and their layout, decides what it writes. Invariants:
//
//   - One goroutine, the committer, owns every write transaction. It takes
//     whatever operations are queued (at most Options.MaxBatch), runs them in
//     order in one bbolt transaction, commits with fsync, and only then
//     reports each operation's result. An operation's result is never
//     reported before its writes are on disk.
//   - An operation that returns an error must not have written anything:
//     operations check first and write last. One that fails while writing
//     returns ErrAbort (or panics), and the whole batch is rolled back. If
//     the commit itself fails, every operation of the batch gets the error
//     and nothing of the batch is on disk.
//   - Reads (View) run concurrently with the committer and see the last
//     committed state.
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
	// ErrCommit wraps a failed commit: nothing of the batch is on disk.
	ErrCommit = errors.New("store: commit failed")
	// ErrAbort, returned (wrapped) by an operation that may have written
	// part of its effects, rolls the whole batch back: every operation of
	// it then fails with ErrCommit. A panicking operation aborts too.
	ErrAbort = errors.New("store: batch aborted")
	// ErrLocked: another process (a running daemon) has the file open.
	ErrLocked = errors.New("store: locked by another process")
)

// DefaultMaxBatch is Options.MaxBatch's default.
const DefaultMaxBatch = 512

// Options configure a store. The zero value works.
type Options struct {
	// MaxBatch is the most operations in one transaction; default 512.
	MaxBatch int
	// Linger is how long the committer waits for more operations after the
	// first of a batch; default 0: it takes what is queued, so at low load
	// a ticket waits for one fsync, and at high load the batch grows while
	// the previous fsync runs. A ticket waits at most Linger plus two
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
	// QueueLen bounds the queue of operations; default 4096. Do blocks (up
	// to its context) when the queue is full.
	QueueLen int
	// ReadOnly opens the file for reading only (for inspection).
	ReadOnly bool
	// NoSync skips fsync. For tests of things other than durability only.
	NoSync bool
	// OnCommit, if set, is called by the committer after every commit with
	// the number of operations and how long the transaction took.
	OnCommit func(ops int, took time.Duration)
}

// Op is an operation run inside the write transaction. It must not keep
// tx or slices from it, and must not write anything if it returns an error.
type Op func(tx *bolt.Tx) error

type request struct {
	op   Op
	done chan error
}

// Store is an open state file.
type Store struct {
	db    *bolt.DB
	opts  Options
	queue chan request
	stop  chan struct{}
	wg    sync.WaitGroup // the committer
	once  sync.Once

	mu     sync.RWMutex // guards closed against Do's send
	closed bool

	// Statistics, read with Stats.
	commits, ops atomic.Uint64
	syncs        atomic.Uint64
	lastBatch    atomic.Int64
	size         atomic.Int64
}

// Open opens or creates the state file at path and starts the committer.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	// The freelist is not written at every commit (NoFreelistSync): bbolt
	// rebuilds it when the file opens. Commits write fewer pages; nothing
	// of the data's durability changes.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: opts.ReadOnly, NoSync: opts.NoSync,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (a running farthingd?)", ErrLocked, path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{db: db, opts: opts, queue: make(chan request, opts.QueueLen), stop: make(chan struct{})}
	if !opts.ReadOnly {
		s.wg.Add(1)
		go s.committer()
	}
	releaseMapped(db)
	s.updateSize()
	return s, nil
}

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
	r := request{op: op, done: make(chan error, 1)}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	select {
	case s.queue <- r:
		return r.done, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// View runs fn in a read-only transaction on the last committed state.
func (s *Store) View(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

// committer is the one goroutine that writes. It exits when the queue is
// closed and drained.
func (s *Store) committer() {
	defer s.wg.Done()
	batch := make([]request, 0, s.opts.MaxBatch)
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	for {
		idleSince := time.Now()
		r, ok := <-s.queue
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

// commit runs a batch in one transaction.
func (s *Store) commit(batch []request) {
	results := make([]error, len(batch))
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, r := range batch {
			results[i] = runOp(r.op, tx)
			if errors.Is(results[i], ErrAbort) {
				return results[i]
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrCommit, err)
		for i := range results {
			results[i] = err
		}
	}
	s.commits.Add(1)
	if !s.opts.NoSync {
		s.syncs.Add(2) // bbolt syncs the pages, then the meta page
	}
	s.ops.Add(uint64(len(batch)))
	s.lastBatch.Store(int64(len(batch)))
	s.updateSize()
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(len(batch), time.Since(start))
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// runOp runs one operation, turning a panic into an error so that one bad
// operation cannot take the batch down with it.
func runOp(op Op, tx *bolt.Tx) (err error) {
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

// Stats are the committer's counters. Syncs counts the fdatasyncs of the
// state file.
type Stats struct {
	Commits, Ops, Syncs uint64
	LastBatch           int64
	FileBytes           int64
}

// WriteBackup writes a consistent copy of the whole file to w, from one
// read transaction (commits go on meanwhile), and returns its size.
func (s *Store) WriteBackup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Compact writes a compacted copy of the file at src (which no process
// may have open) to dst, a new file: free pages are left out and pages
// are filled.
func Compact(dst, src string) error {
	sdb, err := bolt.Open(src, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("%w: %s (a running farthingd?)", ErrLocked, src)
		}
		return fmt.Errorf("store: open %s: %w", src, err)
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
	return Stats{Commits: s.commits.Load(), Ops: s.ops.Load(), Syncs: s.syncs.Load(), LastBatch: s.lastBatch.Load(), FileBytes: s.size.Load()}
}

// Close stops taking operations, lets the committer finish every queued
// one, and closes the file.
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
