package ledger

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// SchemaVersion is the version of the state file's layout this build
// writes. Version 0 is a file from before the version was recorded, with
// version 1's layout. Version 2 adds the openings, audit and refs buckets;
// migrating to it records each existing account's opening balance as its
// balance less the sum of its entries. Version 3 adds the spend bucket
// (spending caps), empty in a migrated file. Version 4 adds the credits
// bucket (top-ups and vouchers sent upstream). Version 5 adds the holds,
// suspended and folded buckets (quarantined tickets, suspended devices,
// ledger entries folded by day once pruned), empty in a migrated file.
// Version 6 adds the chains bucket (payword chains), empty in a migrated
// file. Version 7 records, in a chain's progress, the window its usage
// went into (see chainRecord), and keeps a device's newest chain's last
// index and payword in the device's state (activeChain); a migrated
// chain's usage not reported yet goes upstream naming no aggregate.
// Version 8 changes no bucket: the batches of tickets since the file's
// last checkpoint may be in its journal beside it (store.JournalPath),
// which a build that does not replay it would lose, so such a build must
// refuse the file. Version 9 changes no bucket either: a meter whose last
// reading went backwards keeps its last good register beside it (a meter
// state of layout version 2, see metering.MeterState), which an older
// build cannot read, and a restored file may hold a restore not yet
// announced upstream (metaRestoreDue), which an older build would never
// announce. Version 10 adds the grants bucket (reservations), empty in a
// migrated file, and an account's record may end with what its grants
// reserve, which an older build cannot read. Version 11 adds the control
// bucket (commands applied, what they revoked or provisioned) and the
// tariffs bucket (tariff versions with their effective times), empty in a
// migrated file.
const SchemaVersion = 11

var metaSchemaVersion = []byte("schema-version")

// ErrSchemaNewer: the state file was written by a newer build.
var ErrSchemaNewer = errors.New("ledger: the state file's schema is newer than this build")

// Init prepares a writable store for the books: it creates the buckets
// and checks the schema version, migrating an older file and refusing a
// newer one.
func Init(ctx context.Context, st *store.Store) error {
	return st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		meta := tx.Bucket(bucketMeta)
		var v uint64
		if meta != nil {
			v = getU64(meta.Get(metaSchemaVersion))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w: %s has schema version %d, this build knows up to %d: run a newer farthingd",
				ErrSchemaNewer, st.Path(), v, SchemaVersion)
		}
		if v == SchemaVersion {
			return nil
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		// 0 → 1: the layout is unchanged. 1 → 2: openings from the books.
		if v < 2 {
			if err := migrateOpenings(tx); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		if v == 6 {
			if err := migrateChainProgress(tx); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		if err := tx.Bucket(bucketMeta).Put(metaSchemaVersion, putU64(SchemaVersion)); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		return nil
	})
}

// CheckSchema refuses a read-only view of a state file written by a newer
// build.
func CheckSchema(st *store.Store) error {
	return st.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return nil
		}
		if v := getU64(meta.Get(metaSchemaVersion)); v > SchemaVersion {
			return fmt.Errorf("%w: %s has schema version %d, this build knows up to %d", ErrSchemaNewer, st.Path(), v, SchemaVersion)
		}
		return nil
	})
}

// migrateOpenings records, for each account of a version-1 file, its
// opening balance: the balance less the sum of its entries (every change
// to a balance is an entry).
func migrateOpenings(tx *bolt.Tx) error {
	sums := map[string]metering.Nanos{}
	if err := tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
		var e metering.Entry
		if err := e.UnmarshalBinary(v); err != nil {
			return err
		}
		sums[e.Account] += e.Amount
		return nil
	}); err != nil {
		return err
	}
	ob := tx.Bucket(bucketOpenings)
	return tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
		var a metering.Account
		if err := a.UnmarshalBinary(v); err != nil {
			return err
		}
		if ob.Get(k) != nil {
			return nil
		}
		return ob.Put(append([]byte(nil), k...), encodeOpening(a.Balance-sums[a.ID]))
	})
}
