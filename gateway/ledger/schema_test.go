package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func schemaVersion(t *testing.T, st *store.Store) uint64 {
	var v uint64
	st.View(func(tx *bolt.Tx) error { v = getU64(tx.Bucket(bucketMeta).Get(metaSchemaVersion)); return nil })
	return v
}

// A new file gets the current version; a file of version 0 (no version
// recorded, the same layout) is migrated and keeps its data; a file of a
// newer version is refused, with an error that says what to do.
func TestSchemaVersionOnOpen(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	if v := schemaVersion(t, st); v != SchemaVersion {
		t.Fatalf("new file: schema version %d; want %d", v, SchemaVersion)
	}

	// Version 0: a file made before versions, with an aggregate seq in it.
	st.Do(ctx, func(stx *store.Tx) error {
		meta := stx.Raw().Bucket(bucketMeta)
		meta.Delete(metaSchemaVersion)
		return meta.Put(metaAggSeq, putU64(41))
	})
	if err := Init(ctx, st); err != nil {
		t.Fatalf("migrating version 0: %v", err)
	}
	var seq uint64
	st.View(func(tx *bolt.Tx) error { seq = getU64(tx.Bucket(bucketMeta).Get(metaAggSeq)); return nil })
	if v := schemaVersion(t, st); v != SchemaVersion || seq != 41 {
		t.Fatalf("after migration: version %d, aggregate seq %d; want %d and 41", v, seq, SchemaVersion)
	}

	// A newer file.
	st.Do(ctx, func(tx *store.Tx) error { return tx.Put(bucketMeta, metaSchemaVersion, putU64(SchemaVersion+1)) })
	err := Init(ctx, st)
	if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), "newer farthingd") {
		t.Fatalf("Init on a newer file: %v; want ErrSchemaNewer saying to run a newer farthingd", err)
	}
	if err := CheckSchema(st); !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("CheckSchema on a newer file: %v", err)
	}
}
