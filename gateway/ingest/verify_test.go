package ingest

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// Many tickets verified at once: batches form, and every answer is the
// single-verification answer, bad signatures included.
func TestEdBatcherAnswersEachSignature(t *testing.T) {
	var batched, calls atomic.Int64
	b := newEdBatcher(func(n int) {
		calls.Add(1)
		if n > 1 {
			batched.Add(int64(n))
		}
	})
	const workers, each = 32, 40
	var wg, start sync.WaitGroup
	start.Add(1)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(w + 1)}, 32))
			pub := priv.Public().(ed25519.PublicKey)
			msgs, sigs := make([][]byte, each), make([][]byte, each)
			for i := range each {
				msgs[i] = fmt.Appendf(nil, "device %d ticket %d", w, i)
				sigs[i] = ed25519.Sign(priv, msgs[i])
				if (w+i)%7 == 0 {
					sigs[i][3] ^= 0x40 // bad
				}
			}
			start.Wait()
			for i := range each {
				bad := (w+i)%7 == 0
				if got := b.Verify(pub, msgs[i], sigs[i]); got == bad {
					errs <- fmt.Errorf("device %d ticket %d: verified %v, bad %v", w, i, got, bad)
					return
				}
			}
		}()
	}
	start.Done()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if batched.Load() == 0 {
		t.Fatalf("%d verifications of %d concurrent callers, none in a batch", calls.Load(), workers)
	}
	t.Logf("%d signatures in %d verifications, %d of them in batches", workers*each, calls.Load(), batched.Load())
}
