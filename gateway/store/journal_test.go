package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

// killedCopy copies the state file and its journal as they are on disk
// now, while s runs: what a gateway killed at this moment leaves.
func killedCopy(t *testing.T, s *store.Store) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "state.db")
	for _, p := range [][2]string{{s.Path(), dst}, {store.JournalPath(s.Path()), store.JournalPath(dst)}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// get reads key k of the test bucket in the state file at path, opened
// read-only (which replays its journal).
func get(t *testing.T, path, k string) string {
	t.Helper()
	s, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v []byte
	s.View(func(tx *bolt.Tx) error { v = append(v, bucket(tx).Get([]byte(k))...); return nil })
	return string(v)
}

func do(t *testing.T, s *store.Store, op store.Op) {
	t.Helper()
	if err := s.Do(context.Background(), op); err != nil {
		t.Fatal(err)
	}
}

// A journaled batch is durable before its result is reported: a gateway
// killed after it finds it on opening, though no checkpoint wrote it into
// the state file; and the journal costs one sync per batch, not the
// state file's two.
func TestJournaledBatchSurvivesAKill(t *testing.T) {
	s := open(t, store.Options{})
	before := s.Stats()
	for i := range 50 {
		do(t, s, put(fmt.Sprint("k", i), fmt.Sprint("v", i)))
	}
	do(t, s, store.Op(func(tx *store.Tx) error { return tx.Delete(testBucket, []byte("k7")) }))
	st := s.Stats()
	if st.Checkpoints != before.Checkpoints || st.Syncs-before.Syncs != 51 {
		t.Fatalf("51 journaled batches: %d checkpoints and %d syncs; want 0 and 51", st.Checkpoints-before.Checkpoints, st.Syncs-before.Syncs)
	}
	// Reads see what returned, before any checkpoint.
	s.View(func(tx *bolt.Tx) error {
		if v := bucket(tx).Get([]byte("k49")); string(v) != "v49" {
			t.Errorf("View before the checkpoint: k49 = %q", v)
		}
		return nil
	})
	path := killedCopy(t, s)
	for i := range 50 {
		want := fmt.Sprint("v", i)
		if i == 7 {
			want = ""
		}
		if got := get(t, path, fmt.Sprint("k", i)); got != want {
			t.Fatalf("after the kill, k%d = %q; want %q", i, got, want)
		}
	}
	if _, err := os.Stat(store.JournalPath(path)); !os.IsNotExist(err) {
		t.Errorf("the replayed journal was not removed on close: %v", err)
	}
}

// A torn record at the journal's end (a kill while it was written: its
// batch was never reported) is ignored; the records before it are not.
func TestTornJournalTailIsIgnored(t *testing.T) {
	s := open(t, store.Options{})
	do(t, s, put("a", "1"))
	do(t, s, put("b", "2"))
	path := killedCopy(t, s)
	j := store.JournalPath(path)
	b, _ := os.ReadFile(j)
	// The second record cut short, and then garbage after a whole copy.
	for _, tail := range [][]byte{b[:len(b)-3], append(append([]byte(nil), b...), 0xff, 0x00, 0x13, 0x37, 1, 2, 3)} {
		if err := os.WriteFile(j, tail, 0o600); err != nil {
			t.Fatal(err)
		}
		cp := killedCopyOf(t, path)
		if len(tail) < len(b) { // opening says what it found: one batch, then a torn one
			st, err := store.Open(killedCopyOf(t, path), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if r := st.Recovery(); r.Batches != 1 || !r.Torn {
				t.Errorf("a torn second record: recovery %+v; want 1 batch and a torn one", r)
			}
			st.Close()
		}
		if got := get(t, cp, "a"); got != "1" {
			t.Fatalf("a = %q after a torn tail", got)
		}
		want := "2"
		if len(tail) < len(b) {
			want = ""
		}
		if got := get(t, cp, "b"); got != want {
			t.Fatalf("b = %q; want %q", got, want)
		}
	}
}

// killedCopyOf copies a stopped state file and its journal.
func killedCopyOf(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "state.db")
	for _, p := range [][2]string{{path, dst}, {store.JournalPath(path), store.JournalPath(dst)}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p[1], b, 0o600)
	}
	return dst
}

// Records a checkpoint already holds are never applied again, and a
// journal of another state file (a backup restored over it, an older
// copy) is never applied: a stale record would take a key back.
func TestStaleJournalIsNotReplayed(t *testing.T) {
	s := open(t, store.Options{})
	do(t, s, put("k", "old"))
	stale, _ := os.ReadFile(store.JournalPath(s.Path()))
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	do(t, s, put("k", "new"))
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	do(t, s, put("other", "x"))
	path := killedCopy(t, s)
	if err := os.WriteFile(store.JournalPath(path), stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := get(t, path, "k"); got != "new" {
		t.Fatalf("a stale journal took k back to %q", got)
	}
}

// An aborted batch drops its own writes only: the journaled batches
// before it stay, in the state later batches read and on disk.
func TestAbortKeepsEarlierJournaledBatches(t *testing.T) {
	s := open(t, store.Options{})
	do(t, s, put("kept", "1"))
	err := s.Do(context.Background(), func(tx *store.Tx) error {
		tx.Put(testBucket, []byte("dropped"), []byte("1"))
		return fmt.Errorf("%w: disk trouble", store.ErrAbort)
	})
	if !errors.Is(err, store.ErrCommit) {
		t.Fatalf("aborting op = %v", err)
	}
	do(t, s, put("after", "1"))
	s.View(func(tx *bolt.Tx) error {
		if string(bucket(tx).Get([]byte("kept"))) != "1" || bucket(tx).Get([]byte("dropped")) != nil {
			t.Errorf("after an abort: kept %q, dropped %q", bucket(tx).Get([]byte("kept")), bucket(tx).Get([]byte("dropped")))
		}
		return nil
	})
	path := killedCopy(t, s)
	if get(t, path, "kept") != "1" || get(t, path, "after") != "1" || get(t, path, "dropped") != "" {
		t.Fatal("the journal after an abort does not hold exactly the reported batches")
	}
}

// A raw write is made durable by a checkpoint of its own batch; a
// checkpoint is also due after CheckpointEvery, and Scan and WriteBackup
// read the file after one.
func TestRawWritesAndScanCheckpoint(t *testing.T) {
	s := open(t, store.Options{})
	do(t, s, put("j", "1"))
	c := s.Stats().Checkpoints
	do(t, s, store.Op(func(tx *store.Tx) error { return bucket(tx.Raw()).Put([]byte("raw"), []byte("1")) }))
	if s.Stats().Checkpoints != c+1 {
		t.Fatal("a raw write did not checkpoint")
	}
	do(t, s, put("j2", "1"))
	var seen []byte
	s.Scan(func(tx *bolt.Tx) error { seen = append(seen, bucket(tx).Get([]byte("j2"))...); return nil })
	if string(seen) != "1" || s.Stats().Checkpoints != c+2 {
		t.Fatalf("Scan saw %q after %d checkpoints", seen, s.Stats().Checkpoints-c)
	}
}

// A journaled batch waits at most CheckpointEvery for its checkpoint, and
// a journal past JournalBytes is checkpointed at once.
func TestCheckpointIsDueByAgeAndSize(t *testing.T) {
	s := open(t, store.Options{CheckpointEvery: 50 * time.Millisecond})
	c := s.Stats().Checkpoints
	do(t, s, put("a", "1"))
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Checkpoints == c && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Stats().Checkpoints != c+1 {
		t.Fatal("no checkpoint after CheckpointEvery")
	}
	s2 := open(t, store.Options{JournalBytes: 1000})
	c = s2.Stats().Checkpoints
	big := string(make([]byte, 400))
	for i := range 5 {
		do(t, s2, put(fmt.Sprint("big", i), big))
	}
	if n := s2.Stats().Checkpoints - c; n < 1 || n > 3 {
		t.Fatalf("2 KB through a 1,000-byte journal: %d checkpoints", n)
	}
}

// A key a batch writes many times is journaled once, with its last value:
// what the batch's tickets share costs the journal once.
func TestRepeatedKeyIsJournaledOnce(t *testing.T) {
	s := open(t, store.Options{})
	before := s.Stats().JournalBytes
	do(t, s, store.Op(func(tx *store.Tx) error {
		for i := range 100 {
			if err := tx.Put(testBucket, []byte("shared"), []byte(fmt.Sprintf("value %03d", i))); err != nil {
				return err
			}
		}
		return tx.Delete(testBucket, []byte("never"))
	}))
	if n := s.Stats().JournalBytes - before; n > 100 {
		t.Fatalf("100 writes of one key took %d journal bytes", n)
	}
	if got := get(t, killedCopy(t, s), "shared"); got != "value 099" {
		t.Fatalf("replayed %q; want the last write", got)
	}
}

// FuzzJournalReplay: whatever bytes lie in the journal (a torn write, a
// damaged disk, a file that is not a journal), opening the state file
// never panics nor takes memory beyond the file's size: it replays the
// records that check out, or refuses with ErrJournal.
func FuzzJournalReplay(f *testing.F) {
	// The seeds: a real journal of a few batches, and it damaged.
	dir := f.TempDir()
	s, err := store.Open(filepath.Join(dir, "seed.db"), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	s.Do(context.Background(), func(tx *store.Tx) error { bucket(tx.Raw()); return nil })
	for i := range 3 {
		s.Do(context.Background(), put(fmt.Sprint("k", i), fmt.Sprint("v", i)))
	}
	seed, _ := os.ReadFile(store.JournalPath(s.Path()))
	base, _ := os.ReadFile(s.Path())
	s.Close()
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{0xff, 0xff, 0xff, 0x3f, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, journal []byte) {
		path := filepath.Join(t.TempDir(), "state.db")
		os.WriteFile(path, base, 0o600)
		os.WriteFile(store.JournalPath(path), journal, 0o600)
		st, err := store.Open(path, store.Options{NoSync: true})
		if err != nil {
			if !errors.Is(err, store.ErrJournal) {
				t.Fatalf("open with a damaged journal: %v; want ErrJournal", err)
			}
			return
		}
		st.Close()
	})
}

// Under a load that never lets the committer idle, a batch still
// checkpoints once the journal's oldest record has waited CheckpointEvery.
func TestCheckpointIsDueUnderSteadyLoad(t *testing.T) {
	s := open(t, store.Options{CheckpointEvery: 100 * time.Millisecond})
	c := s.Stats().Checkpoints
	stop := time.Now().Add(400 * time.Millisecond)
	ctx := context.Background()
	var pending []<-chan error
	for i := 0; time.Now().Before(stop); i++ {
		done, err := s.Enqueue(ctx, put(fmt.Sprint("k", i), "v"))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, done)
	}
	for _, d := range pending {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Stats().Checkpoints - c; n < 2 {
		t.Fatalf("400 ms of steady load with a 100 ms checkpoint interval: %d checkpoints", n)
	}
}

// A record damaged in the middle of the journal, with a whole record
// after it, was answered before it was damaged: opening refuses
// (ErrJournal) instead of replaying up to it and leaving the rest.
func TestDamagedJournalIsRefusedNotTruncated(t *testing.T) {
	s := open(t, store.Options{})
	for i := range 3 {
		do(t, s, put(fmt.Sprint("k", i), fmt.Sprint("value ", i)))
	}
	path := killedCopy(t, s)
	j := store.JournalPath(path)
	b, _ := os.ReadFile(j)
	// The second record's value: "value 1" is in the middle of the file.
	i := strings.Index(string(b), "value 1")
	if i < 0 {
		t.Fatal("no second record")
	}
	b[i] ^= 0x20
	os.WriteFile(j, b, 0o600)
	if _, err := store.Open(path, store.Options{}); !errors.Is(err, store.ErrJournal) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("open with a damaged middle record: %v; want ErrJournal saying it was damaged", err)
	}
}
