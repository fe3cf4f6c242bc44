package store

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// FuzzApplyRecord: a record's writes, whatever their bytes, are applied
// or refused with an error; decoding them never panics nor reads past
// them.
func FuzzApplyRecord(f *testing.F) {
	var r record
	r.reset()
	r.add(opPut, []byte("test"), []byte("k"), []byte("v"))
	r.add(opDelete, []byte("test"), []byte("gone"), nil)
	r.add(opPut, []byte("other"), []byte("k2"), make([]byte, 40))
	b, err := r.encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[recordHeader:])
	f.Add([]byte{opDefine, 4, 't', 'e', 's', 't', opPut << 6, 1, 'k'})
	f.Add([]byte{opDelete<<6 | 5, 1, 'k'})
	db, err := bolt.Open(filepath.Join(f.TempDir(), "fuzz.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		tx.CreateBucket([]byte("test"))
		tx.CreateBucket([]byte("other"))
		return nil
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		tx, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		_ = applyRecord(tx, body)
	})
}
