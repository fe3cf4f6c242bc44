package ledger

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

// SchemaVersion is the version of the state file's layout this build
// writes. Version 0 is a file from before the version was recorded; its
// layout is the same, so migrating it records the version.
const SchemaVersion = 1

var metaSchemaVersion = []byte("schema-version")

// ErrSchemaNewer: the state file was written by a newer build.
var ErrSchemaNewer = errors.New("ledger: the state file's schema is newer than this build")

// Init prepares a writable store for the books: it creates the buckets
// and checks the schema version, migrating an older file and refusing a
// newer one.
func Init(ctx context.Context, st *store.Store) error {
	return st.Do(ctx, func(tx *bolt.Tx) error {
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
		// 0 → 1: the layout is unchanged; the version is recorded.
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
