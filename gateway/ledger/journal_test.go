package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/protocol"
)

// copyAsKilled copies the state file and its journal as they are on disk,
// while st runs: what a gateway killed at that moment leaves.
func copyAsKilled(t *testing.T, st *store.Store) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "state.db")
	for _, p := range [][2]string{{st.Path(), dst}, {store.JournalPath(st.Path()), store.JournalPath(dst)}} {
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

// The books a killed gateway left are the books its receipts described:
// every accepted ticket is charged once after the journal's replay (the
// books reconcile, the balance is the live one), a ticket sent again is
// answered as the duplicate it is, and a checkpoint taken before the kill
// is not replayed on top of itself.
func TestReplayedBooksChargeOnce(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	terms := testTerms(t, 100_000_000_000)
	live := New(st, Config{})
	apply := func(st *store.Store, bk *Books, seq uint64) protocol.Receipt {
		t.Helper()
		var rc protocol.Receipt
		if err := st.Do(ctx, func(tx *store.Tx) error {
			var err error
			rc, _, err = bk.Apply(tx, terms, testPayer, ticket(seq, 1000*seq), []byte(fmt.Sprint("t", seq)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return rc
	}
	for seq := uint64(1); seq <= 10; seq++ {
		apply(st, live, seq)
		if seq == 5 {
			if err := st.Checkpoint(ctx); err != nil { // half in the file, half in the journal
				t.Fatal(err)
			}
		}
	}
	want := balanceOf(t, live, terms)
	cp, err := store.Open(copyAsKilled(t, st), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if err := Init(ctx, cp); err != nil {
		t.Fatal(err)
	}
	replayed := New(cp, Config{})
	if err := replayed.Reconcile(); err != nil {
		t.Fatalf("after the replay: %v", err)
	}
	if got := balanceOf(t, replayed, terms); got != want {
		t.Fatalf("after the replay the balance is %d; the live books say %d", got, want)
	}
	if rc := apply(cp, replayed, 10); rc.Status != protocol.StatusDuplicate || rc.Charged == 0 {
		t.Fatalf("ticket 10 sent again after the replay: %+v; want the duplicate of its charge", rc)
	}
	if got := balanceOf(t, replayed, terms); got != want {
		t.Fatalf("a repeat charged: balance %d, want %d", got, want)
	}
}
