package provider

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// A restored gateway's first record (protocol.Restore) says which stream
// its backup was of and the last seq the backup holds. Whatever that
// stream numbered later was sealed by the gateway the restore replaced,
// and the restored books never saw it: the devices' next tickets bring
// that usage again, into the new stream. So the receiver takes those
// records out of the payable books — an aggregate leaves its provider's
// wallet and the totals, a credit the credit totals — and keeps each as
// superseded_by_restore, with its amount. An aggregate already paid out
// is carried as a negative amount: money to recover from the provider's
// next payouts. Records of the superseded stream that arrive after the
// restore record are booked (a resend is still a duplicate) straight into
// that state. Nothing superseded is ever called a duplicate or dropped.

var (
	// bucketRestores: kid epoch of a stream a restore superseded → the seq
	// after which it is superseded, the epoch of the stream that
	// superseded it and when it was restored (Unix ms), 8 bytes each.
	bucketRestores = []byte("restores")
	// bucketSuperseded: kid epoch seq of a booked record a restore
	// superseded → supersededRecord.
	bucketSuperseded = []byte("superseded")
)

// Superseded is the money a restore took out of the payable books, by
// kind (aggregate or credit), provider (aggregates), account and
// currency. Paid is the part that was paid out before the restore was
// known: it is carried as a negative amount, recovered from the
// provider's next payouts.
type Superseded struct {
	Kind     string `json:"kind"`
	Provider string `json:"provider,omitempty"`
	Account  string `json:"account"`
	Currency string `json:"currency"`
	Amount   uint64 `json:"amount_nanos"`
	Count    uint64 `json:"count"`
	Paid     uint64 `json:"paid_nanos"`
}

// RestoreReport is one restore a gateway announced: the stream it
// superseded after seq After, and the stream that superseded it.
type RestoreReport struct {
	Gateway    string `json:"gateway"`
	Superseded string `json:"superseded_stream"`
	After      uint64 `json:"after_seq"`
	By         string `json:"by_stream"`
	Time       int64  `json:"time_ms"`
}

// RestoreEffect is what booking a restore record did: the stream it
// superseded, after which seq, and the money it took out of the payable
// books, by kind, provider, account and currency.
type RestoreEffect struct {
	Superseded protocol.StreamID
	After      uint64
	Money      []Superseded
}

// supersededRecord is one record a restore superseded.
type supersededRecord struct {
	Kind                        string // "aggregate" or "credit"
	Paid                        bool   // an aggregate paid out before the restore was known
	Amount, Quantity, Tickets   uint64
	Provider, Account, Currency string
}

func (r supersededRecord) encode() []byte {
	b := []byte{0, 0}
	if r.Kind == "credit" {
		b[0] = 1
	}
	if r.Paid {
		b[1] = 1
	}
	for _, v := range []uint64{r.Amount, r.Quantity, r.Tickets} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return append(b, r.Provider+"\x00"+r.Account+"\x00"+r.Currency...)
}

func decodeSuperseded(b []byte) (supersededRecord, bool) {
	var r supersededRecord
	if len(b) < 26 {
		return r, false
	}
	r.Kind, r.Paid = "aggregate", b[1] == 1
	if b[0] == 1 {
		r.Kind = "credit"
	}
	r.Amount, r.Quantity, r.Tickets = binary.BigEndian.Uint64(b[2:]), binary.BigEndian.Uint64(b[10:]), binary.BigEndian.Uint64(b[18:])
	parts := bytes.SplitN(b[26:], []byte{0}, 3)
	if len(parts) != 3 {
		return r, false
	}
	r.Provider, r.Account, r.Currency = string(parts[0]), string(parts[1]), string(parts[2])
	return r, true
}

// cutOf is the seq after which stream s is superseded by a restore;
// false if it is not.
func cutOf(tx *bolt.Tx, s protocol.StreamID) (uint64, bool) {
	v := tx.Bucket(bucketRestores).Get(streamKey(s))
	if len(v) != 24 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

// bookRestore supersedes what the restore record r (booked in stream s)
// names: the old stream after r.OldLastSeq.
func bookRestore(tx *bolt.Tx, s protocol.StreamID, r *protocol.Restore) (*RestoreEffect, error) {
	old := protocol.StreamID{KeyID: s.KeyID, Epoch: r.OldEpoch}
	eff := &RestoreEffect{Superseded: old, After: r.OldLastSeq}
	ss := supersession{by: s.Epoch, at: int64(r.Time), money: map[string]*Superseded{}}
	if err := ss.supersede(tx, old, r.OldLastSeq, 0); err != nil {
		return nil, err
	}
	if err := forgetAcks(tx, r); err != nil {
		return nil, err
	}
	for _, m := range ss.money {
		eff.Money = append(eff.Money, *m)
	}
	sort.Slice(eff.Money, func(i, j int) bool { return supersededKey(eff.Money[i]) < supersededKey(eff.Money[j]) })
	return eff, nil
}

func supersededKey(m Superseded) string {
	return m.Kind + "\x00" + m.Provider + "\x00" + m.Account + "\x00" + m.Currency
}

// supersession is the work of one restore record: the stream epoch that
// supersedes (by), the record's time (at), and the money it takes out of
// the payable books, by kind, provider, account and currency.
type supersession struct {
	by    uint64
	at    int64
	money map[string]*Superseded
}

// supersede takes what stream old numbered after seq after out of the
// payable books. A stream restored from one backup twice: the second
// restore names the backup's stream again, and the stream of the first
// restore (which the backup holds nothing of) is superseded whole.
func (ss *supersession) supersede(tx *bolt.Tx, old protocol.StreamID, after uint64, depth int) error {
	rb := tx.Bucket(bucketRestores)
	if prev := rb.Get(streamKey(old)); len(prev) == 24 {
		after = min(after, binary.BigEndian.Uint64(prev))
		if prevBy := binary.BigEndian.Uint64(prev[8:]); prevBy != ss.by && depth < 8 {
			if err := ss.supersede(tx, protocol.StreamID{KeyID: old.KeyID, Epoch: prevBy}, 0, depth+1); err != nil {
				return err
			}
		}
	}
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, after), ss.by), uint64(ss.at))
	if err := rb.Put(streamKey(old), v); err != nil {
		return err
	}
	prefix := streamKey(old)
	var below uint64
	c := tx.Bucket(bucketBooked).Cursor()
	type item struct{ k, v []byte }
	var later []item
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if binary.BigEndian.Uint64(k[len(prefix):]) <= after {
			below++
			continue
		}
		later = append(later, item{append([]byte(nil), k...), append([]byte(nil), v...)})
	}
	for _, it := range later {
		r, err := supersedeRecord(tx, it.k, it.v)
		if err != nil {
			return err
		}
		if r != nil { // nil: superseded before, or no money (a hold, chain progress, a restore)
			addSuperseded(ss.money, r)
		}
	}
	sb := tx.Bucket(bucketStreams)
	if rec, ok := decodeStream(sb.Get(prefix)); ok {
		rec.High, rec.Count, rec.Cut, rec.Superseded = min(rec.High, after), below, after, true
		return sb.Put(prefix, rec.encode())
	}
	return nil
}

func addSuperseded(money map[string]*Superseded, r *supersededRecord) {
	m := Superseded{Kind: r.Kind, Provider: r.Provider, Account: r.Account, Currency: r.Currency}
	k := supersededKey(m)
	if money[k] == nil {
		money[k] = &m
	}
	money[k].Amount += r.Amount
	money[k].Count++
	if r.Paid {
		money[k].Paid += r.Amount
	}
}

// supersedeRecord takes the booked record k (bytes b) out of the payable
// books: nil if it was superseded before or holds no money (a hold or
// chain progress record, which change no totals).
func supersedeRecord(tx *bolt.Tx, k, b []byte) (*supersededRecord, error) {
	sb := tx.Bucket(bucketSuperseded)
	if sb.Get(k) != nil {
		return nil, nil
	}
	m, err := strict.Decode(b)
	if err != nil {
		return nil, nil // booked records decoded when they came
	}
	r, ok := supersededOf(m)
	switch {
	case !ok:
		return nil, nil
	case m.Aggregate != nil:
		if r.Paid, err = unbookAggregate(tx, k, m.Aggregate); err != nil {
			return nil, err
		}
	default:
		if err := unbookCredit(tx, k, m.Credit); err != nil {
			return nil, err
		}
	}
	return &r, sb.Put(k, r.encode())
}

// unbookAggregate takes a booked aggregate out of its totals and its
// provider's wallet: if it is still unpaid, out of the wallet; if it was
// paid out, by carrying its amount as money to recover. It reports
// whether it was paid.
func unbookAggregate(tx *bolt.Tx, k []byte, a *protocol.Aggregate) (bool, error) {
	tb := tx.Bucket(bucketTotals)
	tk := []byte(a.Provider + "\x00" + a.Account + "\x00" + a.Currency)
	t := decodeTotal(tb.Get(tk))
	if t.Amount < a.Amount || t.Quantity < a.Quantity || t.Tickets < a.Tickets || t.Aggregates == 0 {
		return false, fmt.Errorf("superseding %s: the totals of %s/%s hold less than the aggregate", streamOfKey(k).Key(a.Seq), a.Provider, a.Account)
	}
	t.Amount, t.Quantity, t.Tickets, t.Aggregates = t.Amount-a.Amount, t.Quantity-a.Quantity, t.Tickets-a.Tickets, t.Aggregates-1
	if err := tb.Put(tk, t.encode()); err != nil {
		return false, err
	}
	up := tx.Bucket(bucketUnpaid)
	if uk := unpaidKey(a, k); up.Get(uk) != nil {
		return false, up.Delete(uk)
	}
	meta := tx.Bucket(bucketPayoutMeta)
	v := meta.Get([]byte(a.Provider))
	if len(v) < 16 {
		return true, fmt.Errorf("superseding %s: paid, but provider %s has no payout", streamOfKey(k).Key(a.Seq), a.Provider)
	}
	carry, err := metering.Nanos(binary.BigEndian.Uint64(v[8:])).Sub(metering.Nanos(a.Amount))
	if err != nil {
		return true, err
	}
	nv := binary.BigEndian.AppendUint64(append([]byte(nil), v[:8]...), uint64(carry))
	return true, meta.Put([]byte(a.Provider), append(nv, v[16:]...))
}

// unbookCredit takes a booked credit out of the credit totals; a voucher
// it credited first is then first credited by its next credit, if any,
// which is no longer a double redemption.
func unbookCredit(tx *bolt.Tx, k []byte, c *protocol.Credit) error {
	cb := tx.Bucket(bucketCredits)
	ck := []byte(c.Account + "\x00" + c.Currency + "\x00" + CreditKind(c))
	v := cb.Get(ck)
	if len(v) != 16 || binary.BigEndian.Uint64(v) < c.Amount || binary.BigEndian.Uint64(v[8:]) == 0 {
		return fmt.Errorf("superseding %x: the credits of %s hold less than the credit", k, c.Account)
	}
	nv := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(v)-c.Amount), binary.BigEndian.Uint64(v[8:])-1)
	if err := cb.Put(ck, nv); err != nil || c.Kind != protocol.CreditVoucher {
		return err
	}
	vb, db := tx.Bucket(bucketVouchers), tx.Bucket(bucketDoubles)
	if err := db.Delete(append([]byte(c.Ref+"\x00"), k...)); err != nil { // it was a double itself
		return err
	}
	if !bytes.Equal(vb.Get([]byte(c.Ref)), k) {
		return nil
	}
	prefix := []byte(c.Ref + "\x00")
	var next []byte
	var rest [][]byte
	cur := db.Cursor()
	for dk, _ := cur.Seek(prefix); dk != nil && bytes.HasPrefix(dk, prefix); dk, _ = cur.Next() {
		if next == nil {
			next = append([]byte(nil), dk[len(prefix):]...)
			continue
		}
		rest = append(rest, append([]byte(nil), dk...))
	}
	if next == nil {
		return vb.Delete([]byte(c.Ref))
	}
	if err := db.Delete(append(append([]byte(nil), prefix...), next...)); err != nil {
		return err
	}
	for _, dk := range rest {
		if err := db.Put(dk, next); err != nil {
			return err
		}
	}
	return vb.Put([]byte(c.Ref), next)
}

// bookSuperseded books a record of a superseded stream numbered after
// its cut: kept, never payable.
func bookSuperseded(tx *bolt.Tx, k, b []byte) (*supersededRecord, error) {
	m, err := strict.Decode(b)
	if err != nil {
		return nil, nil
	}
	r, ok := supersededOf(m)
	if !ok {
		return nil, nil
	}
	return &r, tx.Bucket(bucketSuperseded).Put(k, r.encode())
}

// SupersededOf is what superseding record m takes out of the payable
// books, with the aggregate's quantity and tickets, for a backend of its
// own (provider/pgbooks); false for a record without money.
func SupersededOf(m *strict.Message) (s Superseded, quantity, tickets uint64, ok bool) {
	r, ok := supersededOf(m)
	return Superseded{Kind: r.Kind, Provider: r.Provider, Account: r.Account, Currency: r.Currency, Amount: r.Amount, Count: 1},
		r.Quantity, r.Tickets, ok
}

// supersededOf is what superseding record m takes out of the payable
// books; false for a record without money (a hold, chain progress).
func supersededOf(m *strict.Message) (supersededRecord, bool) {
	switch {
	case m.Aggregate != nil:
		a := m.Aggregate
		return supersededRecord{Kind: "aggregate", Amount: a.Amount, Quantity: a.Quantity, Tickets: a.Tickets,
			Provider: a.Provider, Account: a.Account, Currency: a.Currency}, true
	case m.Credit != nil:
		c := m.Credit
		return supersededRecord{Kind: "credit", Amount: c.Amount, Account: c.Account, Currency: c.Currency}, true
	}
	return supersededRecord{}, false
}

// reportRestores reads the restores and the money they superseded.
func reportRestores(tx *bolt.Tx, rep *Report) error {
	bind := tx.Bucket(bucketBindings)
	tx.Bucket(bucketRestores).ForEach(func(k, v []byte) error {
		if len(k) != protocol.KeyIDLen+8 || len(v) != 24 {
			return nil
		}
		old := streamOfKey(k)
		by := protocol.StreamID{KeyID: old.KeyID, Epoch: binary.BigEndian.Uint64(v[8:])}
		rep.Restores = append(rep.Restores, RestoreReport{Gateway: string(bind.Get(old.KeyID[:])), Superseded: old.String(),
			After: binary.BigEndian.Uint64(v), By: by.String(), Time: int64(binary.BigEndian.Uint64(v[16:]))})
		return nil
	})
	money := map[string]*Superseded{}
	tx.Bucket(bucketSuperseded).ForEach(func(_, v []byte) error {
		if r, ok := decodeSuperseded(v); ok {
			addSuperseded(money, &r)
		}
		return nil
	})
	for _, m := range money {
		rep.Superseded = append(rep.Superseded, *m)
	}
	sort.Slice(rep.Superseded, func(i, j int) bool { return supersededKey(rep.Superseded[i]) < supersededKey(rep.Superseded[j]) })
	return nil
}
