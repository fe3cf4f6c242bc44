package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// The invariant checks pass what decide makes, and catch each kind of
// contradiction: a seq that does not follow on, a balance that moved by
// other than its entry, a window that lost or made money.
func TestInvariantChecks(t *testing.T) {
	terms := testTerms(t, 1_000_000_000)
	st := ticketState{account: terms.Accounts["home"], meters: make([]meterState, 1)}
	eff, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(1, 1000), raw: []byte("t1"), now: 1})
	if err != nil {
		t.Fatal(err)
	}
	st.device = eff.device
	eff, err = decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(2, 3000), raw: []byte("t2"), now: 2})
	if err != nil || eff.entry == nil {
		t.Fatalf("a charge: %+v, %v", eff.receipt, err)
	}
	if err := checkEffects(&eff, 0); err != nil {
		t.Fatalf("decide's own effects: %v", err)
	}
	moved := eff
	moved.account.Balance++
	if err := checkEffects(&moved, 0); !errors.Is(err, ErrInvariant) || !errors.Is(err, store.ErrAbort) {
		t.Errorf("a balance one nano off its entry: %v; want ErrInvariant and ErrAbort", err)
	}
	sealed := eff
	sealed.seals, sealed.aggSeq = []seal{{seq: 5}}, 5
	if err := checkEffects(&sealed, 3); !errors.Is(err, ErrInvariant) {
		t.Errorf("a seal at 5 after 3: %v; want ErrInvariant", err)
	}
	if err := checkSeals(3, []seal{{seq: 4}, {seq: 5}}, 5); err != nil {
		t.Errorf("seals 4 and 5 after 3: %v", err)
	}
	if err := checkSeals(3, nil, 4); !errors.Is(err, ErrInvariant) {
		t.Errorf("the last seq moved without a seal: %v; want ErrInvariant", err)
	}

	pol := terms.Policies["utility"]
	before := eff.changed[0].window
	it := metering.Item{Time: 1_790_000_003_000, Quantity: 1000, Amount: 300_000_000}
	d, err := pol.Add(before, "EUR", it)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkWindowAdd(before, it, d); err != nil {
		t.Fatalf("an item into its window: %v", err)
	}
	lost := d
	lost.State.Open.Amount--
	if err := checkWindowAdd(before, it, lost); !errors.Is(err, ErrInvariant) {
		t.Errorf("a window that lost a nano: %v; want ErrInvariant", err)
	}
	next := metering.Item{Time: before.Open.End + 1000, Quantity: 5, Amount: 50}
	if d, err = pol.Add(before, "EUR", next); err != nil || len(d.Sealed) != 1 {
		t.Fatalf("an item after the window's end: %+v, %v; want the window sealed", d, err)
	}
	if err := checkWindowAdd(before, next, d); err != nil {
		t.Errorf("a window sealed by time: %v", err)
	}
	after := d.State
	late := metering.Item{Time: before.Open.Start, Quantity: 7, Amount: 70}
	if d, err = pol.Add(after, "EUR", late); err != nil || d.Correction == nil {
		t.Fatalf("a late item: %+v, %v; want a correction", d, err)
	}
	if err := checkWindowAdd(after, late, d); err != nil {
		t.Errorf("a correction: %v", err)
	}
}

// A broken invariant aborts the whole batch: nothing of it is written.
func TestBrokenInvariantWritesNothing(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	bk := New(st, Config{})
	terms := testTerms(t, 1_000_000_000)
	err := st.Do(ctx, func(tx *store.Tx) error {
		if _, _, err := bk.Apply(tx, terms, testPayer, ticket(1, 1000), []byte("t1")); err != nil {
			return err
		}
		eff := ticketEffects{accepted: true, account: terms.Accounts["home"], balanceBefore: 1, device: deviceState{LastSeq: 2}}
		return bk.put(tx, terms, testPayer, ticket(2, 2000), &eff)
	})
	if !errors.Is(err, store.ErrCommit) {
		t.Fatalf("a batch with a broken invariant: %v; want the batch rolled back (store.ErrCommit)", err)
	}
	var n int
	st.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketTickets).Stats().KeyN; return nil })
	if n != 0 {
		t.Fatalf("%d tickets written by an aborted batch; want 0", n)
	}
}
