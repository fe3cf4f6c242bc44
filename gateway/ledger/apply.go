package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// apply runs inside the write transaction. It reads what it needs,
// computes every effect with metering, and only then writes: a refusal
// leaves the transaction untouched.
//
// Effects of an accepted ticket, all in the one commit: the device's last
// seq, the stored receipt, the raw ticket, each meter's state, each (account,
// meter) pricing state, the account entry and balance, and each window's
// state with any windows it sealed (numbered with the gapless aggregate seq).
func (bk *Books) Apply(tx *bolt.Tx, snap *Terms, dev Payer, tk *protocol.Ticket, raw []byte) (protocol.Receipt, error) {
	r := protocol.Receipt{Device: dev.Device, Seq: tk.Seq}
	b := func(name []byte) *bolt.Bucket { return tx.Bucket(name) }

	ds, err := getDeviceState(b(bucketDevices), dev.Device)
	if err != nil {
		return r, err
	}
	acct, err := loadAccount(tx, snap, dev.Account)
	if err != nil {
		return r, err
	}
	r.Currency = string(acct.Currency)
	if tk.Seq <= ds.LastSeq {
		// Repeated or superseded: charges nothing. A repeat is answered
		// with the original charge; a seq never seen below the last
		// accepted one says it was superseded (its registers are covered
		// by the later ticket).
		r.Status = protocol.StatusDuplicate
		r.Reason = protocol.ReasonSuperseded
		if v := b(bucketTickets).Get(seqKey(tk.Seq, dev.Device)); v != nil {
			if sr, err := decodeTicketRecord(v); err == nil {
				r.Charged, r.Balance, r.HasBalance, r.Reason = sr.Charged, sr.Balance, true, protocol.ReasonNone
			}
		}
		return r, nil
	}

	var writes []write
	put := func(bucket, key, val []byte) { writes = append(writes, write{bucket, key, val}) }
	hash := metering.TicketHash(raw)
	ref := dev.Device + "/" + strconv.FormatUint(tk.Seq, 10)
	var total metering.Nanos
	type windowAdd struct {
		key  metering.WindowKey
		item metering.Item
	}
	var adds []windowAdd
	for _, rd := range tk.Readings {
		u, ms2, outcome, err := ds.meter(rd.Meter).Advance(tk.Seq, tk.Epoch, rd.Register, int64(tk.Time))
		switch {
		case errors.Is(err, metering.ErrRegisterBackwards):
			return r, Reject(protocol.ReasonRegisterBackwards, "meter %s: %v", rd.Meter, err)
		case errors.Is(err, metering.ErrEpochBackwards):
			return r, Reject(protocol.ReasonEpochBackwards, "meter %s: %v", rd.Meter, err)
		case err != nil:
			return r, err
		}
		ds.setMeter(rd.Meter, ms2)
		if outcome != metering.Counted {
			continue // a baseline charges nothing and feeds no window
		}
		tariff := snap.Tariffs.Get(dev.Tariffs[rd.Meter])
		ckey := joinKey(dev.Account, rd.Meter)
		var cs metering.ChargeState
		if v := b(bucketCharges).Get(ckey); v != nil {
			if err := cs.UnmarshalBinary(v); err != nil {
				return r, err
			}
		}
		ch, cs2, err := tariff.Price(cs, u)
		if err != nil {
			return r, Reject(protocol.ReasonChargeOverflow, "meter %s: %v", rd.Meter, err)
		}
		if total, err = total.Add(ch.Amount); err != nil {
			return r, Reject(protocol.ReasonChargeOverflow, "%v", err)
		}
		cb, _ := cs2.MarshalBinary()
		put(bucketCharges, ckey, cb)
		adds = append(adds, windowAdd{metering.WindowKey{Provider: dev.Provider, Account: dev.Account, Meter: rd.Meter},
			metering.Item{Time: int64(tk.Time), Quantity: u.Quantity, Amount: ch.Amount, Ticket: hash}})
	}

	if total > 0 {
		entry, acct2, err := acct.Charge(metering.Money{Nanos: total, Currency: acct.Currency}, bk.now().UnixMilli(), ref)
		if errors.Is(err, metering.ErrInsufficientFunds) {
			return r, &Refusal{Status: protocol.StatusInsufficientFunds, Detail: err.Error()}
		}
		if err != nil {
			return r, Reject(protocol.ReasonChargeOverflow, "%v", err)
		}
		eb, _ := entry.MarshalBinary()
		put(bucketEntries, seqKey(entry.Seq, acct.ID), eb)
		acct = acct2
	}
	ab, _ := acct.MarshalBinary()
	put(bucketAccounts, []byte(acct.ID), ab)

	aggSeq := getU64(b(bucketMeta).Get(metaAggSeq))
	aggSeq0 := aggSeq
	var tleaves []byte
	for _, a := range adds {
		wkey := joinKey(a.key.Provider, a.key.Account, a.key.Meter)
		var ws metering.WindowState
		if v := b(bucketWindows).Get(wkey); v != nil {
			if err := ws.UnmarshalBinary(v); err != nil {
				return r, err
			}
		}
		// Several readings of one ticket can land in one window key only
		// if a meter repeats, which the decoder forbids.
		d, err := snap.Policies[a.key.Provider].Add(ws, acct.Currency, a.item)
		if err != nil {
			return r, Reject(protocol.ReasonChargeOverflow, "window %v: %v", a.key, err)
		}
		wb, _ := d.State.MarshalBinary()
		put(bucketWindows, wkey, wb)
		// The ticket's leaf in the window it joined, for inclusion proofs.
		var leafKey []byte
		switch {
		case d.Correction != nil:
			leafKey = leafKeyCorrection(aggSeq + uint64(len(d.Sealed)) + 1)
		case len(d.Sealed) > 0 && d.Sealed[len(d.Sealed)-1].Reason == metering.SealedByThreshold:
			w := d.Sealed[len(d.Sealed)-1]
			leafKey = leafKeyWindow(wkey, w.Start, w.Tickets-1)
		default:
			leafKey = leafKeyWindow(wkey, d.State.Open.Start, d.State.Open.Tickets-1)
		}
		put(bucketLeaves, leafKey, append(hash[:], ref...))
		tleaves = append(binary.AppendUvarint(tleaves, uint64(len(leafKey))), leafKey...)
		for _, sl := range d.Sealed {
			aggSeq++
			rec := sealedRecord{Provider: a.key.Provider, Account: a.key.Account, Meter: a.key.Meter, Sealed: sl}
			ws, err := bk.sealWrites(snap, aggSeq, rec, true)
			if err != nil {
				return r, err
			}
			writes = append(writes, ws...)
		}
		if c := d.Correction; c != nil {
			aggSeq++
			corrected := getU64(b(bucketSlotIndex).Get(seqKey(uint64(c.SlotStart), a.key.Provider, a.key.Account, a.key.Meter)))
			rec := sealedRecord{Provider: a.key.Provider, Account: a.key.Account, Meter: a.key.Meter, Corrects: corrected,
				Sealed: metering.Sealed{Start: c.SlotStart, End: c.SlotEnd, Currency: acct.Currency, Quantity: c.Item.Quantity,
					Amount: c.Item.Amount, Tickets: 1, Root: metering.MerkleRoot([]metering.Hash{c.Item.Ticket})}}
			ws, err := bk.sealWrites(snap, aggSeq, rec, false)
			if err != nil {
				return r, err
			}
			writes = append(writes, ws...)
		}
	}

	avail, _ := acct.Available()
	r.Status, r.Charged, r.Balance, r.HasBalance = protocol.StatusAccepted, uint64(total), int64(avail), true
	if aggSeq != aggSeq0 {
		put(bucketMeta, metaAggSeq, putU64(aggSeq))
	}
	ds.LastSeq = tk.Seq
	put(bucketDevices, []byte(dev.Device), ds.encode())
	put(bucketTickets, seqKey(tk.Seq, dev.Device),
		ticketRecord{Charged: uint64(total), Balance: int64(avail), Leaves: tleaves, Raw: raw}.encode())

	for _, w := range writes {
		if err := tx.Bucket(w.bucket).Put(w.key, w.val); err != nil {
			return r, fmt.Errorf("%w: %v", store.ErrAbort, err) // part written: roll the batch back
		}
	}
	return r, nil
}

var metaAggSeq = []byte("aggregate-seq")

// write is one Put, collected so that an operation writes only once every
// check has passed.
type write struct {
	bucket []byte
	key    []byte
	val    []byte
}

// sealWrites returns what sealing one window (or issuing one correction)
// writes: the sealed record, the slot index (windows only) and, in the
// outbox, the aggregate signed with the gateway's key, so the bytes that
// are sent and re-sent are fixed when the window seals.
func (bk *Books) sealWrites(snap *Terms, seq uint64, rec sealedRecord, window bool) ([]write, error) {
	ws := []write{{bucketSealed, putU64(seq), rec.encode()}}
	if window {
		ws = append(ws, write{bucketSealedBy, leafWindowPrefix(joinKey(rec.Provider, rec.Account, rec.Meter), rec.Start), putU64(seq)})
		ws = append(ws, write{bucketSlotIndex, seqKey(uint64(slotOf(snap.Policies[rec.Provider], rec.Start)), rec.Provider, rec.Account, rec.Meter), putU64(seq)})
	}
	if bk.cfg.Signer != nil {
		agg := rec.Aggregate(snap.GatewayID, seq)
		agg.Epoch = bk.cfg.Stream.Epoch
		var enc protocol.Encoder
		b, err := enc.AppendAggregate(nil, &agg, bk.cfg.Signer)
		if err != nil {
			return nil, fmt.Errorf("aggregate %d: %w", seq, err)
		}
		ws = append(ws, write{bucketOutbox, putU64(seq), b})
	}
	if window {
		bk.cfg.OnSeal(rec.Reason.String())
	} else {
		bk.cfg.OnSeal("correction")
	}
	return ws, nil
}

// CloseWindows seals every open window whose end is at or before now.
func (bk *Books) CloseWindows(ctx context.Context, snap *Terms, now time.Time) error {
	return bk.st.Do(ctx, func(tx *bolt.Tx) error {
		var writes []write
		wb := tx.Bucket(bucketWindows)
		aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
		start := aggSeq
		err := wb.ForEach(func(k, v []byte) error {
			var ws metering.WindowState
			if err := ws.UnmarshalBinary(v); err != nil {
				return nil // left for inspection; never half-written
			}
			key := splitKey(k)
			pol, ok := snap.Policies[key[0]]
			if len(key) != 3 || !ok {
				return nil
			}
			ws2, sealed := pol.Close(ws, now.UnixMilli())
			if sealed == nil {
				if ws2.Floor != ws.Floor { // a split slot's time passed
					b, _ := ws2.MarshalBinary()
					writes = append(writes, write{bucketWindows, append([]byte(nil), k...), b})
				}
				return nil
			}
			aggSeq++
			b, _ := ws2.MarshalBinary()
			writes = append(writes, write{bucketWindows, append([]byte(nil), k...), b})
			sw, err := bk.sealWrites(snap, aggSeq, sealedRecord{Provider: key[0], Account: key[1], Meter: key[2], Sealed: *sealed}, true)
			writes = append(writes, sw...)
			return err
		})
		if err != nil || len(writes) == 0 {
			return err
		}
		if aggSeq != start {
			writes = append(writes, write{bucketMeta, metaAggSeq, putU64(aggSeq)})
		}
		for _, w := range writes {
			if err := tx.Bucket(w.bucket).Put(w.key, w.val); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		return nil
	})
}

func splitKey(k []byte) []string {
	var parts []string
	start := 0
	for i, c := range k {
		if c == 0 {
			parts = append(parts, string(k[start:i]))
			start = i + 1
		}
	}
	return append(parts, string(k[start:]))
}

// leafWindowPrefix is the key prefix of a window's leaves.
func leafWindowPrefix(wkey []byte, start int64) []byte {
	k := append(append([]byte(nil), wkey...), 0)
	return binary.BigEndian.AppendUint64(k, uint64(start))
}

func leafKeyWindow(wkey []byte, start int64, index uint64) []byte {
	return binary.BigEndian.AppendUint64(leafWindowPrefix(wkey, start), index)
}

func leafKeyCorrection(aggSeq uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte("c\x00"), aggSeq), 0)
}

func slotOf(p metering.Policy, t int64) int64 {
	return t - ((t%p.Length)+p.Length)%p.Length
}

func getDeviceState(b *bolt.Bucket, id string) (deviceState, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return deviceState{}, nil
	}
	return decodeDeviceState(v)
}

// loadAccount reads an account, or its opening state if it has none yet.
func loadAccount(tx *bolt.Tx, snap *Terms, id string) (metering.Account, error) {
	if v := tx.Bucket(bucketAccounts).Get([]byte(id)); v != nil {
		var a metering.Account
		return a, a.UnmarshalBinary(v)
	}
	a, ok := snap.Accounts[id]
	if !ok {
		return a, fmt.Errorf("account %q is not configured", id)
	}
	return a, nil
}
