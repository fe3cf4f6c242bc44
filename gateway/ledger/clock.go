package ledger

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/metering"
)

// NewestTimes returns the newest time the books hold by the gateway's
// clock (its newest ledger entry, Unix ms) and by the devices' clocks
// (their meters' newest readings): a gateway whose clock now reads
// earlier than the first has gone back in time — a box without a
// real-time clock that booted with an old time, before NTP set it. 0
// where the books hold none.
func (bk *Books) NewestTimes() (gateway, device int64, err error) {
	err = bk.st.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var e metering.Entry
			if e.UnmarshalBinary(v) == nil {
				gateway = max(gateway, e.Time)
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			ds, err := decodeDeviceState(v)
			if err != nil {
				return fmt.Errorf("device %s: %w", k, err)
			}
			for _, m := range ds.Meters {
				device = max(device, m.State.Time)
			}
			return nil
		})
	})
	return gateway, device, err
}
