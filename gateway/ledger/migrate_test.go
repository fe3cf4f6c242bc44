package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// bucketsSince are the buckets each schema version added (see
// SchemaVersion): a file of an earlier version has none of them.
var bucketsSince = map[uint64][][]byte{
	2:  {bucketOpenings, bucketAudit, bucketRefs},
	3:  {bucketSpend},
	4:  {bucketRecords},
	5:  {bucketHolds, bucketSuspended, bucketFolded},
	6:  {bucketChains},
	9:  {bucketLate},
	11: {bucketControl, bucketTariffs},
}

// A file of every earlier schema version opens in this build: it is
// migrated forward to SchemaVersion with its money where it was (the
// books reconcile, the balance is the same), and takes tickets again. The
// file of each version is this build's file with what that version did
// not have taken out: its later buckets and its version number.
func TestMigratesFromEveryVersion(t *testing.T) {
	for v := uint64(0); v < SchemaVersion; v++ {
		t.Run(fmt.Sprint("version ", v), func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
			if err := Init(ctx, st); err != nil {
				t.Fatal(err)
			}
			bk := New(st, Config{})
			terms := testTerms(t, 100_000_000_000)
			apply := func(seq, reg uint64) {
				t.Helper()
				if err := st.Do(ctx, func(tx *store.Tx) error {
					_, _, err := bk.Apply(tx, terms, testPayer, ticket(seq, reg), []byte(fmt.Sprint("t", seq)))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			apply(1, 1000)
			apply(2, 5000)
			if _, err := bk.TopUp(ctx, terms, "home", metering.Money{Nanos: 7_000, Currency: "EUR"}, Request{Ref: "r1"}); err != nil {
				t.Fatal(err)
			}
			before := balanceOf(t, bk, terms)
			downgrade(t, st, v)
			if err := Init(ctx, st); err != nil {
				t.Fatalf("migrating version %d: %v", v, err)
			}
			if got := schemaVersion(t, st); got != SchemaVersion {
				t.Fatalf("version %d migrated to %d; want %d", v, got, SchemaVersion)
			}
			if err := bk.Reconcile(); err != nil {
				t.Fatalf("version %d after migration: %v", v, err)
			}
			if got := balanceOf(t, bk, terms); got != before {
				t.Fatalf("version %d: balance %d after migration; was %d", v, got, before)
			}
			apply(3, 9000)
			if err := bk.Reconcile(); err != nil || balanceOf(t, bk, terms) >= before {
				t.Fatalf("version %d: a ticket after migration: %v, balance %d (was %d)", v, err, balanceOf(t, bk, terms), before)
			}
		})
	}
}

// downgrade makes the file at st a file of version v: the buckets later
// versions added are gone and v is recorded (none for version 0).
func downgrade(t *testing.T, st *store.Store, v uint64) {
	t.Helper()
	err := st.Do(context.Background(), func(stx *store.Tx) error {
		tx := stx.Raw()
		for since, names := range bucketsSince {
			if v >= since {
				continue
			}
			for _, name := range names {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v == 0 {
			return meta.Delete(metaSchemaVersion)
		}
		return meta.Put(metaSchemaVersion, putU64(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func balanceOf(t *testing.T, bk *Books, terms *Terms) metering.Nanos {
	t.Helper()
	var a metering.Account
	if err := bk.st.View(func(tx *bolt.Tx) error {
		var err error
		a, err = loadAccount(tx, terms, "home")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return a.Balance
}
