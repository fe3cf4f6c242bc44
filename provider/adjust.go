package provider

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
)

// An adjustment is a gateway operator's signed change to an account (a
// credit record of kind adjustment): a credit, or with key 9 a debit. The
// credit totals keep them apart, as kinds "adjustment" and
// "adjustment_debit", so every total stays a sum of positive amounts. An
// adjustment that names a voucher credited twice resolves that flag: the
// report shows the double redemption with the adjustment that settled it.

// CreditKind is the kind a credit is totalled under: its own, or
// "adjustment_debit" for an adjustment that debits.
func CreditKind(c *protocol.Credit) string {
	if c.Kind == protocol.CreditAdjustment && c.Debit {
		return "adjustment_debit"
	}
	return c.Kind
}

// bucketResolved: voucher id → the adjustment that settled its double
// redemption: its booked key (kid epoch seq), its signed amount (8) and
// its reason.
var bucketResolved = []byte("resolved")

// resolve records adjustment c (booked under key) as the settlement of the
// voucher it names; a later adjustment naming it replaces the record.
func resolve(tx *bolt.Tx, key []byte, c *protocol.Credit) error {
	amount := int64(c.Amount)
	if c.Debit {
		amount = -amount
	}
	v := binary.BigEndian.AppendUint64(append([]byte(nil), key...), uint64(amount))
	return tx.Bucket(bucketResolved).Put([]byte(c.Voucher), append(v, c.Reason...))
}

// resolutionOf is the adjustment that settled voucher's double
// redemption; nil if none did.
func resolutionOf(tx *bolt.Tx, voucher string) *Resolution {
	v := tx.Bucket(bucketResolved).Get([]byte(voucher))
	n := protocol.KeyIDLen + 16
	if len(v) < n+8 {
		return nil
	}
	return &Resolution{Adjustment: streamOfKey(v).Key(binary.BigEndian.Uint64(v[protocol.KeyIDLen+8:])),
		Amount: int64(binary.BigEndian.Uint64(v[n:])), Reason: string(v[n+8:])}
}
