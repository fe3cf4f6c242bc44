package ledger

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// Suspension is a device the gateway suspended on its own (too many
// tickets held, or signs of a clone): its tickets are refused with reason
// device_suspended until an operator resumes it.
type Suspension struct {
	Device string `json:"device"`
	Since  int64  `json:"since_ms"`
	Reason string `json:"reason"`
}

func (s Suspension) encode() []byte {
	return metering.NewStateWriter().String(s.Device).Int(s.Since).String(s.Reason)
}

func decodeSuspension(b []byte) (Suspension, error) {
	r := metering.NewStateReader(b, "suspension")
	s := Suspension{Device: r.String(), Since: r.Int(), Reason: r.String()}
	return s, r.Done()
}

// Suspend records that device is suspended, for reason; a device already
// suspended keeps its first record.
func (bk *Books) Suspend(ctx context.Context, device, reason string) error {
	return bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		b := tx.Bucket(bucketSuspended)
		if b.Get([]byte(device)) != nil {
			return nil
		}
		s := Suspension{Device: device, Since: bk.now().UnixMilli(), Reason: reason}
		if err := b.Put([]byte(device), s.encode()); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		return nil
	})
}

// Resume lifts a device's suspension, recording the operation in the
// audit log with the credential; false if it was not suspended.
func (bk *Books) Resume(ctx context.Context, device, credential string) (bool, error) {
	var was bool
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		b := tx.Bucket(bucketSuspended)
		was = b.Get([]byte(device)) != nil
		if !was {
			return nil
		}
		audit := tx.Bucket(bucketAudit)
		seq := audit.Sequence() + 1
		o := Operation{Seq: seq, Kind: "resume", Ref: "device/" + device, Time: bk.now().UnixMilli(), Credential: credential}
		for _, err := range []error{b.Delete([]byte(device)), audit.SetSequence(seq), audit.Put(putU64(seq), o.encode())} {
			if err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		return nil
	})
	return was, err
}

// Suspensions lists the suspended devices.
func (bk *Books) Suspensions() ([]Suspension, error) {
	st := bk.st
	out := []Suspension{}
	err := st.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSuspended).ForEach(func(_, v []byte) error {
			s, err := decodeSuspension(v)
			if err == nil {
				out = append(out, s)
			}
			return err
		})
	})
	return out, err
}
