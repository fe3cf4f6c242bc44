package ledger

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Payword chains in the books. A device's chain commitment is accepted as
// the chain's index 0: a reading of the commitment's start register at
// seq PaywordSeq(number, 0), which sets the meter's baseline (a new meter)
// or charges nothing (a renewal that starts where the last chain ended).
// Each payword ticket is then checked against the chain's last accepted
// payword and, if it hashes down to it, accepted as a reading of start +
// index × units, through Apply like any other ticket: dedup, cumulative
// registers, plausibility, windows and receipts are the same. The chain's
// last index and payword move with the ticket, in the same operation.
//
// The rules, each with its reason: a payword of a chain the device never
// committed (or another device's) is chain_unknown; past the chain's
// length or expiry, chain_exhausted; below the last accepted index,
// payword_backwards; more than MaxPaywordSteps past it, payword_too_far;
// not hashing down to it, payword_mismatch. A commitment whose number is
// not above the device's last, or a chain id committed before with other
// bytes, is chain_replayed; one whose start is not where the meter stands
// in the same epoch, chain_gap (the gap would be usage with no payword to
// prove it).

// chainRecord is a committed chain, how far it has been spent, and how
// far it has been reported upstream.
type chainRecord struct {
	protocol.Commitment
	Account, Provider string           // who the chain's usage is charged to and owed to
	Last              uint32           // the last accepted index (0: only the commitment)
	LastWord          protocol.Payword // w_Last (the anchor while Last is 0)
	Reported          uint32           // the index the last progress record reached
	ReportedWord      protocol.Payword // w_Reported
	ReportedAt        int64            // when it was sent (Unix ms; the commitment's time at first)
	Raw               []byte           // the commitment as the device sent it
}

// A chain is kept as two records: its terms, written once with the
// commitment ("c" key), and its progress, rewritten by every payword ("s"
// key), so that a payword writes a few dozen bytes, not the commitment.

func (r chainRecord) encodeTerms() []byte {
	c := r.Commitment
	return metering.NewStateWriter().String(c.Device).String(string(c.Chain[:])).Uint(uint64(c.Number)).String(c.Meter).Uint(c.Units).
		Uint(uint64(c.Length)).String(string(c.Anchor[:])).Uint(c.Start).Uint(c.Expiry).Uint(c.Epoch).
		String(r.Account).String(r.Provider).Rest(r.Raw)
}

func (r chainRecord) encodeProgress() []byte {
	return metering.NewStateWriter().Uint(uint64(r.Last)).String(string(r.LastWord[:])).
		Uint(uint64(r.Reported)).String(string(r.ReportedWord[:])).Int(r.ReportedAt)
}

// loadChain reads a chain's two records; ok is false if there is none.
func loadChain(b *bolt.Bucket, device string, id protocol.ChainID) (chainRecord, bool, error) {
	var r chainRecord
	tv, pv := b.Get(chainKey(device, id)), b.Get(chainStateKey(device, id))
	if tv == nil || pv == nil {
		return r, false, nil
	}
	rd := metering.NewStateReader(tv, "chain terms")
	r.Device = rd.String()
	copy(r.Chain[:], rd.String())
	r.Number = uint32(rd.Uint())
	r.Meter = rd.String()
	r.Units = rd.Uint()
	r.Length = uint32(rd.Uint())
	copy(r.Anchor[:], rd.String())
	r.Start, r.Expiry, r.Epoch = rd.Uint(), rd.Uint(), rd.Uint()
	r.Account, r.Provider = rd.String(), rd.String()
	r.Raw = append([]byte(nil), rd.Rest()...)
	if err := rd.Err(); err != nil {
		return r, false, err
	}
	pr := metering.NewStateReader(pv, "chain progress")
	r.Last = uint32(pr.Uint())
	copy(r.LastWord[:], pr.String())
	r.Reported = uint32(pr.Uint())
	copy(r.ReportedWord[:], pr.String())
	r.ReportedAt = pr.Int()
	return r, true, pr.Done()
}

// chainStateKey is a chain's progress record: "s" device 0 chain id.
func chainStateKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("s", device), 0), id[:]...)
}

func chainKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("c", device), 0), id[:]...)
}

func chainNumberKey(device string) []byte { return joinKey("n", device) }

// chainDirtyKey marks a chain that moved since its last progress record:
// "d" device 0 chain id → 1.
var chainDirtyPrefix = []byte("d\x00")

// dirtyChain is the device and chain id of a chainDirtyKey.
func dirtyChain(k []byte) (string, protocol.ChainID) {
	return string(k[len(chainDirtyPrefix) : len(k)-protocol.ChainIDLen-1]), protocol.ChainID(k[len(k)-protocol.ChainIDLen:])
}

// reportDue reports whether a chain's last progress record was sent at
// least a window of its provider (an hour if it has none) before now.
func reportDue(t *Terms, rec *chainRecord, now time.Time) bool {
	window := time.Hour.Milliseconds()
	if pol, ok := t.Policies[rec.Provider]; ok && pol.Length > 0 {
		window = pol.Length
	}
	return now.UnixMilli() >= rec.ReportedAt+window
}

func chainDirtyKey(device string, id protocol.ChainID) []byte {
	return append(append(joinKey("d", device), 0), id[:]...)
}

// CommitmentTicket is the reading a commitment stands for: the chain's
// start register at seq PaywordSeq(number, 0), dated now.
func CommitmentTicket(c *protocol.Commitment, now int64) protocol.Ticket {
	return protocol.Ticket{Device: c.Device, Seq: protocol.PaywordSeq(c.Number, 0), Time: uint64(now), Epoch: c.Epoch,
		Readings: []protocol.Reading{{Meter: c.Meter, Register: c.Start}}}
}

// ApplyCommitment accepts a chain commitment (already verified against the
// device's key) as its index 0, in a store operation; raw is the
// commitment's bytes. The receipt is the index-0 reading's.
func (bk *Books) ApplyCommitment(tx *bolt.Tx, t *Terms, p Payer, c *protocol.Commitment, raw []byte) (protocol.Receipt, bool, error) {
	now := bk.now().UnixMilli()
	tk := CommitmentTicket(c, now)
	b := tx.Bucket(bucketChains)
	if rec, ok, err := loadChain(b, c.Device, c.Chain); err != nil {
		return protocol.Receipt{}, false, err
	} else if ok {
		if !bytes.Equal(rec.Raw, raw) {
			return protocol.Receipt{}, false, Reject(protocol.ReasonChainReplayed, "chain %x of %s was committed before with other terms", c.Chain, c.Device)
		}
		return bk.Apply(tx, t, p, &tk, raw) // the same commitment again: its receipt again
	}
	if last := getU64(b.Get(chainNumberKey(c.Device))); uint64(c.Number) <= last {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainReplayed, "chain number %d is not above %s's last, %d", c.Number, c.Device, last)
	}
	if uint64(now) >= c.Expiry {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainExhausted, "the chain expired at %d", c.Expiry)
	}
	ds, err := getDeviceState(tx.Bucket(bucketDevices), c.Device)
	if err != nil {
		return protocol.Receipt{}, false, err
	}
	if ds.LastSeq >= tk.Seq {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainReplayed, "chain %d's seqs start at %d, below %s's last seq %d", c.Number, tk.Seq, c.Device, ds.LastSeq)
	}
	if m := ds.meter(c.Meter); m.Started && m.Epoch == c.Epoch && m.Register != c.Start {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainGap, "the chain starts at register %d; meter %s stands at %d", c.Start, c.Meter, m.Register)
	}
	rc, fresh, err := bk.Apply(tx, t, p, &tk, raw)
	if err != nil || !fresh || rc.Status != protocol.StatusAccepted {
		return rc, fresh, err
	}
	rec := chainRecord{Commitment: *c, Account: p.Account, Provider: p.Provider, LastWord: c.Anchor, ReportedWord: c.Anchor,
		ReportedAt: now, Raw: append([]byte(nil), raw...)}
	if err := b.Put(chainKey(c.Device, c.Chain), rec.encodeTerms()); err != nil {
		return rc, fresh, fmt.Errorf("%w: %v", store.ErrAbort, err)
	}
	if err := b.Put(chainStateKey(c.Device, c.Chain), rec.encodeProgress()); err != nil {
		return rc, fresh, fmt.Errorf("%w: %v", store.ErrAbort, err)
	}
	if err := b.Put(chainNumberKey(c.Device), putU64(uint64(c.Number))); err != nil {
		return rc, fresh, fmt.Errorf("%w: %v", store.ErrAbort, err)
	}
	return rc, fresh, nil
}

// ApplyPayword checks a payword ticket against its chain and accepts it as
// the chain's reading, in a store operation. tk is filled with the
// reading it stands for (its seq, the gateway's time now, the register),
// also when it is refused, so that the receipt carries its seq.
func (bk *Books) ApplyPayword(tx *bolt.Tx, t *Terms, p Payer, pw *protocol.PaywordTicket, raw []byte, tk *protocol.Ticket) (protocol.Receipt, bool, error) {
	now := bk.now().UnixMilli()
	*tk = protocol.Ticket{Device: pw.Device, Seq: uint64(pw.Index), Time: uint64(now)}
	b := tx.Bucket(bucketChains)
	rec, ok, err := loadChain(b, pw.Device, pw.Chain)
	if err != nil {
		return protocol.Receipt{}, false, err
	}
	if !ok {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainUnknown, "%s committed to no chain %x", pw.Device, pw.Chain)
	}
	tk.Seq, tk.Epoch = protocol.PaywordSeq(rec.Number, pw.Index), rec.Epoch
	if pw.Index > rec.Length {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainExhausted, "index %d is past the chain's length %d", pw.Index, rec.Length)
	}
	tk.Readings = []protocol.Reading{{Meter: rec.Meter, Register: rec.Register(pw.Index)}}
	if uint64(now) >= rec.Expiry {
		return protocol.Receipt{}, false, Reject(protocol.ReasonChainExhausted, "the chain expired at %d", rec.Expiry)
	}
	switch j := rec.Last; {
	case pw.Index < j:
		return protocol.Receipt{}, false, Reject(protocol.ReasonPaywordBackwards, "index %d is below the chain's last, %d", pw.Index, j)
	case pw.Index == j:
		if pw.Word != rec.LastWord {
			return protocol.Receipt{}, false, Reject(protocol.ReasonPaywordMismatch, "index %d is not the payword accepted for it", j)
		}
		return bk.Apply(tx, t, p, tk, raw) // a repeat: its receipt again
	case pw.Index-j > protocol.MaxPaywordSteps:
		return protocol.Receipt{}, false, Reject(protocol.ReasonPaywordTooFar, "index %d is %d steps past the last, more than %d", pw.Index, pw.Index-j, protocol.MaxPaywordSteps)
	case protocol.PaywordWalk(&rec.Chain, pw.Word, uint64(pw.Index-j)) != rec.LastWord:
		return protocol.Receipt{}, false, Reject(protocol.ReasonPaywordMismatch, "index %d does not hash down to index %d", pw.Index, j)
	}
	rc, fresh, err := bk.Apply(tx, t, p, tk, raw)
	if err != nil || !fresh {
		return rc, fresh, err
	}
	rec.Last, rec.LastWord = pw.Index, pw.Word
	if err := b.Put(chainStateKey(pw.Device, pw.Chain), rec.encodeProgress()); err != nil {
		return rc, fresh, fmt.Errorf("%w: %v", store.ErrAbort, err)
	}
	if dk := chainDirtyKey(pw.Device, pw.Chain); b.Get(dk) == nil { // marked once until reported
		if err := b.Put(dk, []byte{1}); err != nil {
			return rc, fresh, fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
	}
	return rc, fresh, nil
}

// maxReportsPerRound bounds the progress records one ReportChains call
// writes, so that one round of housekeeping stays short.
const maxReportsPerRound = 256

// ReportChains puts in the outbox a chain progress record for each chain
// that moved since its last one and whose last was sent at least one
// window (of its provider) ago: the device's commitment and the paywords
// at the last reported and the last accepted index, signed with the
// gateway's key and numbered in the stream with the aggregates. It
// returns how many it wrote. Without a signer (a gateway that seals
// nothing) it does nothing.
func (bk *Books) ReportChains(ctx context.Context, t *Terms, now time.Time) (int, error) {
	if bk.cfg.Signer == nil {
		return 0, nil
	}
	// Most rounds have nothing due: look first, and write only then.
	var anyDue bool
	if err := bk.st.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChains)
		c := b.Cursor()
		for k, _ := c.Seek(chainDirtyPrefix); k != nil && bytes.HasPrefix(k, chainDirtyPrefix) && !anyDue; k, _ = c.Next() {
			device, id := dirtyChain(k)
			rec, ok, err := loadChain(b, device, id)
			anyDue = err != nil || !ok || reportDue(t, &rec, now)
		}
		return nil
	}); err != nil || !anyDue {
		return 0, err
	}
	n := 0
	err := bk.st.Do(ctx, func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketChains)
		var due [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(chainDirtyPrefix); k != nil && bytes.HasPrefix(k, chainDirtyPrefix) && len(due) < maxReportsPerRound; k, _ = c.Next() {
			due = append(due, append([]byte(nil), k...))
		}
		aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
		var ws []write
		var done [][]byte
		for _, dk := range due {
			sk := append([]byte("s"), dk[1:]...) // the chain's progress record
			device, id := dirtyChain(dk)
			rec, ok, err := loadChain(b, device, id)
			if err != nil {
				return err
			}
			if !ok {
				done = append(done, dk)
				continue
			}
			if !reportDue(t, &rec, now) {
				continue // not due: it stays marked
			}
			done = append(done, dk)
			if rec.Last <= rec.Reported {
				continue
			}
			aggSeq++
			p := protocol.ChainProgress{Gateway: terms(t).GatewayID, Seq: bk.wire(aggSeq), Provider: rec.Provider, Account: rec.Account,
				Commitment: rec.Raw, From: rec.Reported, FromWord: rec.ReportedWord, To: rec.Last, ToWord: rec.LastWord, Epoch: bk.cfg.Stream.Epoch}
			var enc protocol.Encoder
			pb, err := enc.AppendChainProgress(nil, &p, bk.cfg.Signer)
			if err != nil {
				return fmt.Errorf("chain progress record: %w", err)
			}
			rec.Reported, rec.ReportedWord, rec.ReportedAt = rec.Last, rec.LastWord, now.UnixMilli()
			ws = append(ws, write{bucketOutbox, putU64(aggSeq), pb},
				write{bucketRecords, putU64(aggSeq), metering.NewStateWriter().String(rec.Account).Int(now.UnixMilli())},
				write{bucketChains, sk, rec.encodeProgress()})
			n++
		}
		if n > 0 {
			ws = append(ws, write{bucketMeta, metaAggSeq, putU64(aggSeq)})
		}
		if err := putAll(tx, ws); err != nil {
			return err
		}
		for _, dk := range done {
			if err := b.Delete(dk); err != nil {
				return fmt.Errorf("%w: %v", store.ErrAbort, err)
			}
		}
		for range n {
			bk.cfg.OnSeal("chain_progress")
		}
		return nil
	})
	return n, err
}

// ChainView is a device's payword chain as the books have it: the
// commitment as the device sent it and the last payword accepted, which
// together prove the device's usage on the chain to anyone (see
// provider.VerifyPayword).
type ChainView struct {
	Commitment []byte           `json:"commitment"`
	Chain      protocol.ChainID `json:"chain"`
	Number     uint32           `json:"number"`
	Meter      string           `json:"meter"`
	Length     uint32           `json:"length"`
	Last       uint32           `json:"last_index"`
	LastWord   protocol.Payword `json:"last_payword"`
	Register   uint64           `json:"register"`
}

// Chains lists a device's committed chains, by chain id.
func Chains(st *store.Store, device string) ([]ChainView, error) {
	out := []ChainView{}
	err := st.View(func(tx *bolt.Tx) error {
		prefix := append(joinKey("c", device), 0)
		b := tx.Bucket(bucketChains)
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			r, ok, err := loadChain(b, device, protocol.ChainID(k[len(prefix):]))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			out = append(out, ChainView{Commitment: r.Raw, Chain: r.Chain, Number: r.Number, Meter: r.Meter, Length: r.Length,
				Last: r.Last, LastWord: r.LastWord, Register: r.Register(r.Last)})
		}
		return nil
	})
	return out, err
}
