package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
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
	err := st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
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

var (
	// metaSeqBase keys the stream's seq base: a restored state file starts
	// a new epoch whose seqs count from 1 again, so an aggregate's seq on
	// the wire is its seq in the file less the base (8 bytes; absent: 0).
	metaSeqBase = []byte("seq-base")
	// metaGatewayKey keys the key id of the gateway key that signs the
	// stream, recorded on first use.
	metaGatewayKey = []byte("gateway-kid")
	// metaRestored keys when the file was last restored from a backup
	// (Unix ms) and the epoch it had then.
	metaRestored = []byte("restored")
	// metaRestoreDue keys a restore not announced upstream yet: the
	// backup's epoch, its last wire seq in that epoch and when it was
	// restored (Unix ms), 8 bytes each. The gateway that opens the file
	// sends the announcement first in the new stream (AnnounceRestore).
	metaRestoreDue = []byte("restore-due")
)

// ErrOtherGateway: the state file belongs to another gateway key.
var ErrOtherGateway = errors.New("ledger: the state file was written under another gateway key")

// OpenStream returns the state file's aggregate stream under the gateway
// key kid and its seq base (see StreamEpoch and metaSeqBase), recording
// kid on first use; a file recorded under another key is ErrOtherGateway.
func OpenStream(ctx context.Context, st *store.Store, kid []byte) (protocol.StreamID, uint64, error) {
	epoch, err := StreamEpoch(ctx, st)
	if err != nil {
		return protocol.StreamID{}, 0, err
	}
	var base uint64
	err = st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		meta := tx.Bucket(bucketMeta)
		base = getU64(meta.Get(metaSeqBase))
		switch old := meta.Get(metaGatewayKey); {
		case old == nil:
			if err := meta.Put(metaGatewayKey, append([]byte(nil), kid...)); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		case !bytes.Equal(old, kid):
			return fmt.Errorf("%w: %s is gateway key %x's, this gateway's key is %x", ErrOtherGateway, st.Path(), old, kid)
		}
		return nil
	})
	if err != nil {
		return protocol.StreamID{}, 0, err
	}
	s, ok := protocol.StreamOf(kid, epoch)
	if !ok {
		return s, 0, fmt.Errorf("ledger: gateway key id %x is not %d bytes", kid, protocol.KeyIDLen)
	}
	return s, base, nil
}

// Restored is what PrepareRestore did to a backup.
type Restored struct {
	OldEpoch, NewEpoch uint64
	// Base is the seq the old epoch had reached in the backup (in the
	// file's numbering): the new epoch's seqs count from 1 after it.
	Base uint64
	// OldLastSeq is Base as the old stream numbered it on the wire: what
	// the restore record tells receivers (protocol.Restore).
	OldLastSeq uint64
}

// PrepareRestore readies a copy of a backup to become a gateway's state
// file: it refuses a backup of another gateway key (kid), and starts a new
// aggregate stream epoch whose seqs count from 1 again, so that no
// receiver mistakes what the restored gateway seals next for what it
// sealed after the backup was taken. Aggregates still in the backup's
// outbox keep their old epoch and seq: they were signed so. The restore is
// announced upstream by the first record of the new stream, which the
// gateway that opens the file writes (AnnounceRestore).
func PrepareRestore(ctx context.Context, st *store.Store, kid []byte, now time.Time) (Restored, error) {
	var r Restored
	err := st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: not a gateway state file", store.ErrAbort)
		}
		if old := meta.Get(metaGatewayKey); old != nil && !bytes.Equal(old, kid) {
			return fmt.Errorf("%w: the backup is gateway key %x's, this data directory's key is %x", ErrOtherGateway, old, kid)
		}
		r.OldEpoch, r.Base = getU64(meta.Get(metaStreamEpoch)), getU64(meta.Get(metaAggSeq))
		r.OldLastSeq = r.Base - getU64(meta.Get(metaSeqBase))
		var b [8]byte
		for r.NewEpoch == 0 || r.NewEpoch == r.OldEpoch {
			if _, err := rand.Read(b[:]); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
			r.NewEpoch = binary.BigEndian.Uint64(b[:])
		}
		for _, w := range []write{{bucketMeta, metaStreamEpoch, putU64(r.NewEpoch)}, {bucketMeta, metaSeqBase, putU64(r.Base)},
			{bucketMeta, metaGatewayKey, append([]byte(nil), kid...)},
			{bucketMeta, metaRestored, append(putU64(uint64(now.UnixMilli())), putU64(r.OldEpoch)...)},
			{bucketMeta, metaRestoreDue, append(append(putU64(r.OldEpoch), putU64(r.OldLastSeq)...), putU64(uint64(now.UnixMilli()))...)}} {
			if err := meta.Put(w.key, w.val); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		return nil
	})
	return r, err
}

// AnnounceRestore writes, if the file was restored and the restore is not
// announced yet, the restore record (protocol.Restore) into the outbox as
// the next record of the stream — the first of the new epoch, since a
// gateway announces before it seals anything — and returns it; nil if
// there is nothing to announce. gateway is the gateway id the record
// names.
func (bk *Books) AnnounceRestore(ctx context.Context, gateway string) (*protocol.Restore, error) {
	var out *protocol.Restore
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		meta := tx.Bucket(bucketMeta)
		due := meta.Get(metaRestoreDue)
		if len(due) != 24 || bk.cfg.Signer == nil {
			return nil
		}
		seq := getU64(meta.Get(metaAggSeq)) + 1
		r := protocol.Restore{Gateway: gateway, Seq: bk.wire(seq), OldEpoch: binary.BigEndian.Uint64(due),
			OldLastSeq: binary.BigEndian.Uint64(due[8:]), Time: binary.BigEndian.Uint64(due[16:]), Epoch: bk.cfg.Stream.Epoch}
		var enc protocol.Encoder
		b, err := enc.AppendRestore(nil, &r, bk.cfg.Signer)
		if err != nil {
			return fmt.Errorf("%w: restore record: %v", store.ErrAbort, err)
		}
		for _, w := range []write{{bucketOutbox, putU64(seq), b},
			{bucketRecords, putU64(seq), metering.NewStateWriter().String("").Int(int64(r.Time))},
			{bucketMeta, metaAggSeq, putU64(seq)}} {
			if err := tx.Bucket(w.bucket).Put(w.key, w.val); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		if err := meta.Delete(metaRestoreDue); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		out = &r
		return nil
	})
	return out, err
}
