package ledger

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
)

// metaStreamEpoch keys the stream epoch in the meta bucket: 8 bytes,
// written once, in the transaction that first finds it missing.
var metaStreamEpoch = []byte("stream-epoch")

// StreamEpoch returns the state file's stream epoch, making it on
// first use. A new state file gets a random epoch (never 0), so a gateway
// that lost its state and starts its aggregate seqs from 1 again is seen
// by receivers as a new stream, not as a sender of duplicates. A state
// file that sealed aggregates before epochs existed keeps epoch 0: its
// aggregates already went out without one, and the ones it seals next
// continue that stream.
func StreamEpoch(ctx context.Context, st *store.Store) (uint64, error) {
	var epoch uint64
	err := st.Do(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(metaStreamEpoch); len(v) == 8 {
			epoch = binary.BigEndian.Uint64(v)
			return nil
		}
		if getU64(meta.Get(metaAggSeq)) == 0 {
			var b [8]byte
			for epoch == 0 {
				if _, err := rand.Read(b[:]); err != nil {
					return fmt.Errorf("%w: %v", store.ErrAbort, err)
				}
				epoch = binary.BigEndian.Uint64(b[:])
			}
		}
		if err := meta.Put(metaStreamEpoch, putU64(epoch)); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		return nil
	})
	return epoch, err
}
