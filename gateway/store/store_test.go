package store_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

func open(t testing.TB, opts store.Options) *store.Store {
	s := openAt(t, filepath.Join(t.TempDir(), "state.db"), opts)
	t.Cleanup(func() { s.Close() })
	return s
}

// openAt opens the store at path with the test bucket made.
func openAt(t testing.TB, path string, opts store.Options) *store.Store {
	s, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Do(context.Background(), func(tx *store.Tx) error { bucket(tx.Raw()); return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

// testBucket is the tests' bucket: the store knows bytes, not the
// books' buckets, so its tests make their own.
var testBucket = []byte("test")

// bucket returns the test bucket, creating it in a write transaction.
func bucket(tx *bolt.Tx) *bolt.Bucket {
	if b := tx.Bucket(testBucket); b != nil || !tx.Writable() {
		return b
	}
	b, err := tx.CreateBucket(testBucket)
	if err != nil {
		panic(err)
	}
	return b
}

func put(k, v string) store.Op {
	return func(tx *store.Tx) error { return tx.Put(testBucket, []byte(k), []byte(v)) }
}

func TestGroupCommitIsDurableAndIsolated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openAt(t, path, store.Options{})
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%10 == 0 { // refused operations write nothing and do not disturb the batch
				errs[i] = s.Do(context.Background(), func(*store.Tx) error { return fmt.Errorf("refused %d", i) })
				return
			}
			errs[i] = s.Do(context.Background(), put(fmt.Sprint("k", i), fmt.Sprint(i)))
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Ops != 201 || st.Commits == 0 || st.Commits > 201 { // and the test bucket's
		t.Fatalf("stats %+v", st)
	}
	t.Logf("200 operations in %d commits", st.Commits)
	s.Close()
	// Reopen: every successful operation is there, no refused one.
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.View(func(tx *bolt.Tx) error {
		for i, e := range errs {
			v := bucket(tx).Get([]byte(fmt.Sprint("k", i)))
			if (i%10 == 0) != (e != nil) || (e == nil) != (string(v) == fmt.Sprint(i)) {
				t.Errorf("op %d: err %v, stored %q", i, e, v)
			}
		}
		return nil
	})
}

func TestPanickingOpIsAnError(t *testing.T) {
	s := open(t, store.Options{})
	if err := s.Do(context.Background(), func(*store.Tx) error { panic("boom") }); err == nil {
		t.Fatal("a panicking operation succeeded")
	}
	if err := s.Do(context.Background(), put("after", "1")); err != nil {
		t.Fatalf("the store did not survive a panicking operation: %v", err)
	}
	// An aborting operation rolls back what it wrote.
	err := s.Do(context.Background(), func(tx *store.Tx) error {
		tx.Put(testBucket, []byte("half"), []byte("written"))
		return fmt.Errorf("%w: disk trouble", store.ErrAbort)
	})
	if !errors.Is(err, store.ErrCommit) {
		t.Fatalf("aborting op = %v; want ErrCommit", err)
	}
	s.View(func(tx *bolt.Tx) error {
		if v := bucket(tx).Get([]byte("half")); v != nil {
			t.Errorf("an aborted operation's write landed: %q", v)
		}
		return nil
	})
}

func TestClosedStoreRefuses(t *testing.T) {
	s := open(t, store.Options{})
	s.Close()
	if err := s.Do(context.Background(), put("x", "y")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Do after Close = %v; want ErrClosed", err)
	}
}

// BenchmarkGroupCommit: 64 writers putting 100-byte values with fsync on,
// against one put per transaction.
func BenchmarkGroupCommit(b *testing.B) {
	val := make([]byte, 100)
	b.Run("grouped-64-writers", func(b *testing.B) {
		s := open(b, store.Options{})
		var n sync.WaitGroup
		ch := make(chan int)
		for w := 0; w < 64; w++ {
			n.Add(1)
			go func() {
				defer n.Done()
				for i := range ch {
					s.Do(context.Background(), func(tx *store.Tx) error {
						return tx.Put(testBucket, binary.BigEndian.AppendUint64(nil, uint64(i)), val)
					})
				}
			}()
		}
		for i := 0; b.Loop(); i++ {
			ch <- i
		}
		close(ch)
		n.Wait()
		b.ReportMetric(float64(s.Stats().Ops)/float64(max(1, s.Stats().Commits)), "ops/commit")
	})
	b.Run("one-per-tx", func(b *testing.B) {
		s := open(b, store.Options{})
		for i := 0; b.Loop(); i++ {
			s.Do(context.Background(), func(tx *store.Tx) error {
				return tx.Put(testBucket, binary.BigEndian.AppendUint64(nil, uint64(i)), val)
			})
		}
	})
}

// The adaptive wait: operations that trickle in one by one while the
// store is busy share a commit; after an idle spell a lone operation is
// committed at once, without waiting for company.
func TestGapJoinsATrickleAndSparesTheIdle(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	s := open(t, store.Options{Linger: 400 * time.Millisecond, Gap: 100 * time.Millisecond,
		OnCommit: func(n int, _ time.Duration) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }})
	mu.Lock()
	sizes = nil // the test bucket's commit
	mu.Unlock()
	ctx := context.Background()
	enqueue := func(k string) <-chan error {
		done, err := s.Enqueue(ctx, put(k, "v"))
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	last := func() int { mu.Lock(); defer mu.Unlock(); return sizes[len(sizes)-1] }

	time.Sleep(500 * time.Millisecond) // idle for longer than Linger
	lone := enqueue("lone")
	time.Sleep(10 * time.Millisecond) // within the gap, had it waited
	next := enqueue("next")
	if err := <-lone; err != nil {
		t.Fatal(err)
	}
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(sizes) != 2 || sizes[0] != 1 {
		t.Fatalf("after an idle spell a lone operation waited for company: commits %v", sizes)
	}
	mu.Unlock()
	// Busy now: three operations 10 ms apart, the first right after the
	// last commit, all within the gap of the one before.
	var dones []<-chan error
	for i := range 3 {
		dones = append(dones, enqueue(fmt.Sprint("trickle-", i)))
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range dones {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	if last() != 3 {
		t.Fatalf("a trickle of 3 was committed as %v", sizes)
	}
}
