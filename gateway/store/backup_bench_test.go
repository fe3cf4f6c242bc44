package store_test

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"
)

// BenchmarkBackup1GB times a hot backup (one read transaction's WriteTo,
// synced) of a state file of about 1 GB: 1,000,000 records of 1 KB.
func BenchmarkBackup1GB(b *testing.B) {
	dir := b.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	val := make([]byte, 1000)
	for batch := range 1000 {
		err := st.Do(b.Context(), func(stx *store.Tx) error {
			bk, err := stx.Raw().CreateBucketIfNotExists([]byte("data"))
			if err != nil {
				return err
			}
			bk.FillPercent = 1
			for i := range 1000 {
				rand.Read(val[:32])
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(batch*1000+i)), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		f, err := os.Create(filepath.Join(dir, "backup"))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		w := bufio.NewWriterSize(f, 1<<20)
		n, err := st.WriteBackup(w)
		if err == nil {
			err = w.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.ReportMetric(float64(n)/1e6, "MB")
		b.ReportMetric(took.Seconds(), "s/backup")
		b.ReportMetric(float64(n)/1e6/took.Seconds(), "MB/s")
	}
}
