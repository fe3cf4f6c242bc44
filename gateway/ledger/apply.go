package ledger

import (
	"context"
	"encoding"
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

// Apply accepts one ticket's effects inside the write transaction tx, in
// three steps: load reads the state the ticket touches, decide computes
// every effect with metering (no I/O: decide is tested without bbolt),
// and put writes them. A refusal (*Refusal) or any error leaves the
// transaction untouched.
//
// Effects of an accepted ticket, all in the one commit: the device's last
// seq, the stored receipt, the raw ticket, each meter's state, each
// (account, meter) pricing state, the account entry and balance, and each
// window's state with any windows it sealed (numbered with the gapless
// aggregate seq). A held ticket commits the same, with a hold record
// instead of a charge. fresh is false for a ticket seen before (nothing
// was written).
func (bk *Books) Apply(tx *store.Tx, t *Terms, p Payer, tk *protocol.Ticket, raw []byte) (r protocol.Receipt, fresh bool, err error) {
	r, eff, err := bk.apply(tx, &ticketInput{t: t, p: p, tk: tk, raw: raw}, nil)
	return r, eff != nil, err
}

// chainStep is what a payword ticket or a chain commitment adds to Apply:
// a check of the chain against the device's state before anything is
// decided (nil: none), and the device's active chain after it.
type chainStep struct {
	check   func(ds *deviceState) error
	next    activeChain
	payword bool // a payword ticket: its usage is proven, and says so in its window
}

// apply is Apply, also for a payword ticket or a chain commitment (cs),
// returning what an accepted ticket wrote; eff is nil when nothing was.
// in names the terms, the payer, the ticket and its bytes; apply reads
// the state it decides on and the time.
func (bk *Books) apply(tx *store.Tx, in *ticketInput, cs *chainStep) (protocol.Receipt, *ticketEffects, error) {
	t, p, tk := in.t, in.p, in.tk
	st, err := load(tx.Bolt(), t, p, tk)
	if err != nil {
		return protocol.Receipt{Device: p.Device, Seq: tk.Seq}, nil, err
	}
	if cs != nil && cs.check != nil {
		if err := cs.check(&st.device); err != nil {
			return protocol.Receipt{Device: p.Device, Seq: tk.Seq}, nil, err
		}
	}
	st.payword = cs != nil && cs.payword
	in.st, in.now = st, bk.now().UnixMilli()
	if revokedKey(tx.Bolt(), p.Key[:]) {
		return protocol.Receipt{Device: p.Device, Seq: tk.Seq}, nil, Reject(protocol.ReasonKeyRevoked, "key %x of device %s was revoked by a control command", p.Key, p.Device)
	}
	if in.tariffs, in.tariffVersion, err = bk.tariffsAt(tx.Bolt(), t, int64(tk.Time)); err != nil {
		return protocol.Receipt{Device: p.Device, Seq: tk.Seq}, nil, err
	}
	eff, err := decide(in)
	if err != nil || !eff.accepted {
		return eff.receipt, nil, err
	}
	if cs != nil {
		eff.device.Chain = cs.next
	}
	if len(eff.lates) > 0 {
		leaves, tleaves, folds, err := foldLate(tx.Bolt(), eff.lates, itemsOf{hash: in.hash, ref: in.ref()}, in.now)
		if err != nil {
			return eff.receipt, nil, err
		}
		eff.leaves, eff.folds = append(eff.leaves, leaves...), folds
		eff.ticket.Leaves = append(eff.ticket.Leaves, tleaves...)
	}
	if err := bk.put(tx, t, p, tk, &eff); err != nil {
		return eff.receipt, nil, err
	}
	return eff.receipt, &eff, nil
}

// ticketState is what accepting one ticket reads from the books.
type ticketState struct {
	device  deviceState
	account metering.Account
	meters  []meterState    // per reading, in the ticket's order
	aggSeq  uint64          // the last aggregate seq sealed
	stored  *ticketRecord   // tk.Seq's record, when tk.Seq is not new
	hold    *holdRecord     // tk.Seq's hold, when tk.Seq is not new and was held
	opening bool            // the account has no record yet: account is its opening state
	payword bool            // the ticket is a payword: a chain proves its usage
	grant   *metering.Grant // the grant the ticket names, open or closed (ticket key 8); nil: none
	// ended: the ticket names an earlier grant of its device on one of its
	// meters, which a later one replaced: charged like a ticket under a
	// grant that ended (held, not refused, when the balance is short).
	ended bool
	// What the account and the device spent in the current day and month,
	// for their caps.
	accountSpent, deviceSpent metering.Spent
}

// meterState is one reading's meter: its (account, meter) pricing state
// and its (provider, account, meter) window. A ticket names a meter once,
// so a slice in reading order serves as the map (no map per ticket).
type meterState struct {
	charge metering.ChargeState
	window metering.WindowState
}

// load reads what the ticket touches.
func load(tx *bolt.Tx, t *Terms, p Payer, tk *protocol.Ticket) (ticketState, error) {
	var st ticketState
	var err error
	if st.device, err = getDeviceState(tx.Bucket(bucketDevices), p.Device); err != nil {
		return st, err
	}
	if st.account, err = loadAccount(tx, t, p.Account); err != nil {
		return st, err
	}
	st.opening = tx.Bucket(bucketAccounts).Get([]byte(p.Account)) == nil
	if v := tx.Bucket(bucketSpend).Get(spendKey("account", p.Account)); v != nil {
		if err := st.accountSpent.UnmarshalBinary(v); err != nil {
			return st, err
		}
	}
	if v := tx.Bucket(bucketSpend).Get(spendKey("device", p.Device)); v != nil {
		if err := st.deviceSpent.UnmarshalBinary(v); err != nil {
			return st, err
		}
	}
	if tk.Seq <= st.device.LastSeq {
		if v := tx.Bucket(bucketTickets).Get(seqKey(tk.Seq, p.Device)); v != nil {
			if r, err := decodeTicketRecord(v); err == nil {
				st.stored = &r
			}
		}
		if v := tx.Bucket(bucketHolds).Get(seqKey(tk.Seq, p.Device)); v != nil {
			if h, err := decodeHoldRecord(v); err == nil {
				st.hold = &h
			}
		}
		return st, nil
	}
	st.meters = make([]meterState, len(tk.Readings))
	for i, rd := range tk.Readings {
		m := &st.meters[i]
		if v := tx.Bucket(bucketCharges).Get(joinKey(p.Account, rd.Meter)); v != nil {
			if err := m.charge.UnmarshalBinary(v); err != nil {
				return st, err
			}
		}
		if v := tx.Bucket(bucketWindows).Get(joinKey(p.Provider, p.Account, rd.Meter)); v != nil {
			if err := m.window.UnmarshalBinary(v); err != nil {
				return st, err
			}
		}
	}
	st.aggSeq = getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
	if tk.Grant != 0 {
		if st.grant, st.ended, err = ticketGrant(tx, p.Device, tk); err != nil {
			return st, err
		}
	}
	return st, nil
}

// ticketGrant finds the grant a ticket names among its meters' grants.
// An earlier grant of the device on one of those meters (replaced since)
// is ended: it has no record left to charge against. A grant the device
// never had is refused as grant_unknown.
func ticketGrant(tx *bolt.Tx, device string, tk *protocol.Ticket) (g *metering.Grant, ended bool, err error) {
	for _, rd := range tk.Readings {
		g, err := getGrant(tx, device, rd.Meter)
		if err != nil {
			return nil, false, err
		}
		switch {
		case g == nil:
		case g.ID == tk.Grant:
			return g, false, nil
		case tk.Grant < g.ID:
			ended = true
		}
	}
	if ended {
		return nil, true, nil
	}
	return nil, false, Reject(protocol.ReasonGrantUnknown, "ticket %d of device %s names grant %d, which none of its meters has", tk.Seq, device, tk.Grant)
}

// ticketEffects is what accepting one ticket changes.
type ticketEffects struct {
	receipt  protocol.Receipt
	accepted bool            // false: a duplicate, nothing to write
	opening  *metering.Nanos // the account's opening balance, to record with its first write
	// Spending to record, when the account or the device has a cap.
	accountSpent, deviceSpent *metering.Spent
	device                    deviceState
	account                   metering.Account
	balanceBefore             metering.Nanos  // the account's balance before the ticket
	reservedBefore            metering.Nanos  // what the account reserved before it
	grant                     *metering.Grant // the grant the ticket was charged under, after it
	paid                      metering.Nanos  // what the grant's reservation paid of the charge
	entry                     *metering.Entry // nil when nothing was charged
	changed                   []meterChange   // per counted reading
	leaves                    []write         // the ticket's Merkle leaves
	seals                     []seal          // aggregates sealed, in seq order
	aggSeq                    uint64          // the last aggregate seq after this ticket
	ticket                    ticketRecord
	hold                      *holdRecord // the ticket was held: its record
	lates                     []lateItem  // items of sealed slots
	folds                     []write     // their folds (foldLate)
}

// meterChange is a counted reading's new pricing state and window.
type meterChange struct {
	meter  string
	charge metering.ChargeState
	window metering.WindowState
}

// seal is one aggregate a ticket seals: a window, or a correction of the
// last window sealed in slot (whose aggregate seq put looks up).
type seal struct {
	seq    uint64
	rec    sealedRecord
	window bool
	slot   int64
}

// decide computes a ticket's effects from the state load read; it does
// no I/O. now is the gateway's clock (Unix ms), for the ledger entry.
func decide(in *ticketInput) (ticketEffects, error) {
	st, t, p, tk, raw, now := in.st, in.t, in.p, in.tk, in.raw, in.now
	in.hash = metering.TicketHash(raw)
	eff := ticketEffects{receipt: protocol.Receipt{Device: p.Device, Seq: tk.Seq, Currency: string(st.account.Currency)}}
	if tk.Seq <= st.device.LastSeq {
		answerRepeat(st, &eff.receipt)
		return eff, nil
	}
	ds := st.device
	if p.Rotating && p.Key != p.NextKey && (ds.Key == p.NextKey || now >= p.RetireAt) {
		return eff, Reject(protocol.ReasonKeyRevoked, "device %s rotated to key %x: key %x is retired", p.Device, p.NextKey, p.Key)
	}
	ds.Key = p.Key
	ds.Meters = append([]meterRecord(nil), ds.Meters...) // st is not changed
	// The decoder bounds readings to MaxReadings: arrays, not allocations.
	var usage [protocol.MaxReadings]metering.Usage
	var outcomes [protocol.MaxReadings]metering.Outcome
	j := judgement{ds: ds, usage: usage[:len(tk.Readings)], outcomes: outcomes[:len(tk.Readings)]}
	if err := judge(in, &j); err != nil {
		return eff, err
	}
	if j.rule != metering.Plausible {
		return holdTicket(in, j)
	}
	items, total, err := price(in, j, &eff)
	if err != nil {
		return eff, err
	}
	if err := chargeAccount(in, total, grantShare(in, items), &eff); err != nil {
		var rf *Refusal
		if (in.st.grant != nil || in.st.ended) && errors.As(err, &rf) && rf.Status == protocol.StatusInsufficientFunds {
			j.reason = protocol.ReasonGrantExceeded // served under a grant: held for a person, never refused
			return holdTicket(in, j)
		}
		return eff, err
	}
	wins, err := addToWindows(t, p, itemsOf{cur: eff.account.Currency, hash: in.hash, ref: in.ref()}, items, st.aggSeq)
	if err != nil {
		return eff, err
	}
	for i, w := range wins.states {
		eff.changed[i].window = w
	}
	eff.leaves, eff.seals, eff.aggSeq, eff.lates = wins.leaves, wins.seals, wins.aggSeq, wins.lates
	avail, _ := eff.account.Available()
	r := &eff.receipt
	r.Status, r.Charged, r.Balance, r.HasBalance = protocol.StatusAccepted, uint64(total), int64(avail), true
	if level := terms(t).LowBalance[p.Account]; level > 0 && avail < level {
		r.LowBalance = true
	}
	j.ds.LastSeq = tk.Seq
	eff.device = j.ds
	eff.ticket = ticketRecord{Charged: uint64(total), Balance: int64(avail), Leaves: wins.tleaves, Raw: raw}
	eff.accepted = true
	return eff, nil
}

// ref names the ticket in ledger entries: "device/seq".
func (in *ticketInput) ref() string { return in.p.Device + "/" + strconv.FormatUint(in.tk.Seq, 10) }

// answerRepeat is the answer to a ticket at or below the device's last
// seq: it charges nothing. A repeat is answered with the original charge;
// a seq never seen below the last accepted one says it was superseded
// (its registers are covered by the later ticket); a held (or voided)
// ticket again gets the same answer, so the device still stops sending it.
func answerRepeat(st ticketState, r *protocol.Receipt) {
	r.Status, r.Reason = protocol.StatusDuplicate, protocol.ReasonSuperseded
	if sr := st.stored; sr != nil {
		r.Charged, r.Balance, r.HasBalance, r.Reason = sr.Charged, sr.Balance, true, protocol.ReasonNone
	}
	if h := st.hold; h != nil && h.State != protocol.HoldReleased {
		r.Status, r.Reason = protocol.StatusHeld, h.Rule
	}
}

// judge judges every reading by its meter's rules into j (whose usage and
// outcomes have a slot per reading), moving the meters of j.ds: a ticket
// that breaks a rule is held whole (j.rule), and nothing of it is priced.
func judge(in *ticketInput, j *judgement) error {
	ds := &j.ds
	for ri, rd := range in.tk.Readings {
		rules := in.p.rules(in.t, rd.Meter)
		u, ms2, outcome, v, err := rules.Judge(ds.meter(rd.Meter), metering.MeterReading{Seq: in.tk.Seq, Epoch: in.tk.Epoch, Register: rd.Register, Time: int64(in.tk.Time)}, in.now)
		switch {
		case errors.Is(err, metering.ErrRegisterBackwards):
			return Reject(protocol.ReasonRegisterBackwards, "meter %s: %v", rd.Meter, err)
		case errors.Is(err, metering.ErrEpochBackwards):
			return Reject(protocol.ReasonEpochBackwards, "meter %s: %v", rd.Meter, err)
		case err != nil:
			return err
		}
		ds.setMeter(rd.Meter, ms2)
		j.usage[ri], j.outcomes[ri] = u, outcome
		if j.rule == metering.Plausible {
			j.rule = v
		}
	}
	return nil
}

// price prices every counted reading with its tariff, records each
// meter's new pricing state in eff.changed, and returns the items for the
// windows and their total. A baseline charges nothing and feeds no window.
func price(in *ticketInput, j judgement, eff *ticketEffects) ([]windowItem, metering.Nanos, error) {
	var total metering.Nanos
	var items []windowItem
	for ri, rd := range in.tk.Readings {
		if j.outcomes[ri] != metering.Counted {
			continue
		}
		u := j.usage[ri]
		set := in.tariffs
		if set == nil { // decided without a state file
			set = in.t.Tariffs
		}
		tariff := set.Get(in.p.Tariffs[rd.Meter])
		if tariff == nil {
			return nil, 0, Reject(protocol.ReasonUnknownMeter, "meter %s: tariff %q is not in tariff version %q", rd.Meter, in.p.Tariffs[rd.Meter], in.tariffVersion)
		}
		ch, cs2, err := tariff.Price(in.st.meters[ri].charge, u)
		if err != nil {
			return nil, 0, Reject(protocol.ReasonChargeOverflow, "meter %s: %v", rd.Meter, err)
		}
		if total, err = total.Add(ch.Amount); err != nil {
			return nil, 0, Reject(protocol.ReasonChargeOverflow, "%v", err)
		}
		eff.changed = append(eff.changed, meterChange{meter: rd.Meter, charge: cs2})
		it := metering.Item{Time: int64(in.tk.Time), Quantity: u.Quantity, Amount: ch.Amount, Ticket: in.hash, Bands: ch.Parts(tariff),
			Tariff: in.tariffVersion}
		if in.st.payword {
			it.Proven = u.Quantity
		}
		items = append(items, windowItem{meter: rd.Meter, state: in.st.meters[ri].window, item: it})
	}
	return items, total, nil
}

// grantShare is the part of a ticket's usage and charge its grant
// covers: the grant's meter's item (none without a grant).
func grantShare(in *ticketInput, items []windowItem) metering.Item {
	if g := in.st.grant; g != nil {
		for _, it := range items {
			if it.meter == g.Meter {
				return it.item
			}
		}
	}
	return metering.Item{}
}

// chargeAccount debits total from the payer's account, within the
// account's and the device's spending caps, and records the entry, the
// account after it and what the caps counted in eff. Under an open grant,
// the grant's meter's charge (share) comes out of its reservation first.
// A charge the account cannot cover, or past a cap, is refused with what
// it had available.
func chargeAccount(in *ticketInput, total metering.Nanos, share metering.Item, eff *ticketEffects) error {
	st, p := in.st, in.p
	acct := st.account
	eff.balanceBefore, eff.reservedBefore = acct.Balance, acct.Reserved
	if st.opening {
		b := st.account.Balance
		eff.opening = &b
	}
	eff.account = acct
	if total == 0 {
		return spendGrant(in, share, 0, eff)
	}
	caps := terms(in.t).Caps[p.Account]
	if caps.Day > 0 || caps.Month > 0 {
		s, err := caps.Charge(st.accountSpent, total, in.now)
		if err != nil {
			return spendRefusal("account "+p.Account, st.account, err)
		}
		eff.accountSpent = &s
	}
	if p.DailyCap > 0 {
		s, err := metering.Caps{Day: p.DailyCap, Location: caps.Location}.Charge(st.deviceSpent, total, in.now)
		if err != nil {
			return spendRefusal("device "+p.Device, st.account, err)
		}
		eff.deviceSpent = &s
	}
	var cover metering.Nanos // what this grant's reservation pays: never another grant's
	if g := st.grant; g != nil && g.Open() {
		cover = min(share.Amount, g.Reserved)
	}
	entry, acct2, paid, err := acct.ChargeGrant(metering.Money{Nanos: total, Currency: acct.Currency}, cover, in.now, in.ref())
	if errors.Is(err, metering.ErrInsufficientFunds) {
		return withAvailable(&Refusal{Status: protocol.StatusInsufficientFunds, Detail: err.Error()}, acct)
	}
	if err != nil {
		return Reject(protocol.ReasonChargeOverflow, "%v", err)
	}
	eff.entry, eff.account = &entry, acct2
	return spendGrant(in, share, paid, eff)
}

// spendGrant records in eff what a ticket under a grant used and paid of
// it.
func spendGrant(in *ticketInput, share metering.Item, paid metering.Nanos, eff *ticketEffects) error {
	g := in.st.grant
	if g == nil {
		return nil
	}
	g2, err := g.Spend(share.Quantity, share.Amount, paid, in.now)
	if err != nil {
		return Reject(protocol.ReasonChargeOverflow, "%v", err)
	}
	eff.grant, eff.paid = &g2, paid
	return nil
}

// windowItem is one priced usage on its way into its window.
type windowItem struct {
	meter string
	state metering.WindowState
	item  metering.Item
}

// windowAdds is what adding a ticket's items to their windows changes.
type windowAdds struct {
	states  []metering.WindowState // per item
	leaves  []write                // the ticket's Merkle leaves
	tleaves []byte                 // their keys, for the ticket record
	seals   []seal                 // aggregates sealed, in seq order
	aggSeq  uint64                 // the last aggregate seq after them
	lates   []lateItem             // items of sealed slots, for their folds (foldLate)
}

// itemsOf names the ticket whose items go into windows: their currency,
// the ticket's hash (its Merkle leaf) and its reference ("device/seq").
type itemsOf struct {
	cur  metering.Currency
	hash metering.Hash
	ref  string
}

// addToWindows adds one ticket's priced items (src names the ticket) to
// the payer's windows, after aggregate seq aggSeq: an item whose window
// sealed already is late, for its slot's fold (lates). No I/O.
func addToWindows(t *Terms, p Payer, src itemsOf, items []windowItem, aggSeq uint64) (windowAdds, error) {
	cur, hash, ref := src.cur, src.hash, src.ref
	var out windowAdds
	for _, a := range items {
		key := metering.WindowKey{Provider: p.Provider, Account: p.Account, Meter: a.meter}
		wkey := joinKey(key.Provider, key.Account, key.Meter)
		// Several readings of one ticket can land in one window key only
		// if a meter repeats, which the decoder forbids.
		d, err := t.Policies[key.Provider].Add(a.state, cur, a.item)
		if err != nil {
			return out, Reject(protocol.ReasonChargeOverflow, "window %v: %v", key, err)
		}
		if err := checkWindowAdd(a.state, a.item, d); err != nil {
			return out, fmt.Errorf("window %v: %w", key, err)
		}
		out.states = append(out.states, d.State)
		if c := d.Correction; c != nil { // late: into its slot's fold, whose leaf foldLate keys
			out.lates = append(out.lates, lateItem{provider: key.Provider, account: key.Account, meter: key.Meter, cur: cur, c: *c})
			continue
		}
		// The ticket's leaf in the window it joined, for inclusion proofs.
		var leafKey []byte
		switch {
		case len(d.Sealed) > 0 && d.Sealed[len(d.Sealed)-1].Reason == metering.SealedByThreshold:
			w := d.Sealed[len(d.Sealed)-1]
			leafKey = leafKeyWindow(wkey, w.Start, w.Tickets-1)
		default:
			leafKey = leafKeyWindow(wkey, d.State.Open.Start, d.State.Open.Tickets-1)
		}
		out.leaves = append(out.leaves, write{bucketLeaves, leafKey, append(hash[:], ref...)})
		out.tleaves = append(binary.AppendUvarint(out.tleaves, uint64(len(leafKey))), leafKey...)
		for _, sl := range d.Sealed {
			aggSeq++
			out.seals = append(out.seals, seal{seq: aggSeq, window: true,
				rec: sealedRecord{Provider: key.Provider, Account: key.Account, Meter: key.Meter, Sealed: sl}})
		}
	}
	out.aggSeq = aggSeq
	return out, nil
}

// put writes an accepted ticket's effects: it checks them against the
// books (checkEffects), looks up what corrections correct, signs what
// sealed, then writes; a failed write aborts the batch, since part of the
// effects may be written.
func (bk *Books) put(tx *store.Tx, t *Terms, p Payer, tk *protocol.Ticket, eff *ticketEffects) error {
	// The file's last aggregate seq is read only when the ticket seals or
	// holds something: otherwise the ticket writes no seq.
	last := eff.aggSeq
	if len(eff.seals) > 0 || eff.hold != nil {
		last = getU64(tx.Bolt().Bucket(bucketMeta).Get(metaAggSeq))
	}
	if err := checkEffects(eff, last); err != nil {
		return err
	}
	var w writes
	sw, err := bk.sealAll(tx.Bolt(), t, eff.seals)
	if err != nil {
		return err
	}
	w.list = append(w.list, sw...)
	for _, c := range eff.changed {
		marshal(&w, bucketCharges, joinKey(p.Account, c.meter), c.charge)
		marshal(&w, bucketWindows, joinKey(p.Provider, p.Account, c.meter), c.window)
	}
	if e := eff.entry; e != nil {
		marshal(&w, bucketEntries, seqKey(e.Seq, eff.account.ID), e)
	}
	marshal(&w, bucketAccounts, []byte(eff.account.ID), eff.account)
	if g := eff.grant; g != nil {
		marshal(&w, bucketGrants, grantKey(g.Device, g.Meter), *g)
	}
	if eff.opening != nil {
		w.add(bucketOpenings, []byte(eff.account.ID), encodeOpening(*eff.opening))
	}
	if s := eff.accountSpent; s != nil {
		marshal(&w, bucketSpend, spendKey("account", p.Account), s)
	}
	if s := eff.deviceSpent; s != nil {
		marshal(&w, bucketSpend, spendKey("device", p.Device), s)
	}
	w.list = append(append(w.list, eff.leaves...), eff.folds...)
	if len(eff.seals) > 0 {
		w.add(bucketMeta, metaAggSeq, putU64(eff.aggSeq))
	}
	if eff.hold != nil {
		hw, err := bk.holdWrites(t, eff.hold, eff.aggSeq+1)
		if err != nil {
			return err
		}
		w.list = append(w.list, hw...)
	}
	marshal(&w, bucketDevices, []byte(p.Device), eff.device)
	w.add(bucketTickets, seqKey(tk.Seq, p.Device), eff.ticket.encode())
	if w.err != nil {
		return w.err
	}
	return putAll(tx, w.list)
}

// sealAll returns what sealing seals writes: a correction names the
// aggregate it corrects (the last sealed in its slot), and each is signed
// into the outbox.
func (bk *Books) sealAll(tx *bolt.Tx, t *Terms, seals []seal) ([]write, error) {
	var out []write
	for _, s := range seals {
		if !s.window {
			s.rec.Corrects = getU64(tx.Bucket(bucketSlotIndex).Get(seqKey(uint64(s.slot), s.rec.Provider, s.rec.Account, s.rec.Meter)))
		}
		ws, err := bk.sealWrites(t, s.seq, s.rec, s.window)
		if err != nil {
			return nil, err
		}
		out = append(out, ws...)
	}
	return out, nil
}

// writes collects an operation's writes and the first error in making
// them, so that nothing is written when a record cannot be encoded.
type writes struct {
	list []write
	err  error
}

func (w *writes) add(bucket, key, val []byte) { w.list = append(w.list, write{bucket, key, val}) }

// marshal adds v's binary form; a record that cannot be encoded is the
// operation's error. (A function of T, not a method taking an interface,
// so that a record passed by value is not boxed on the heap per ticket.)
func marshal[T encoding.BinaryMarshaler](w *writes, bucket, key []byte, v T) {
	b, err := v.MarshalBinary()
	if err != nil {
		if w.err == nil {
			w.err = fmt.Errorf("ledger: %s/%s: %w", bucket, key, err)
		}
		return
	}
	w.add(bucket, key, b)
}

var metaAggSeq = []byte("aggregate-seq")

// write is one Put, collected so that an operation writes only once every
// check has passed.
type write struct {
	bucket []byte
	key    []byte
	val    []byte
}

// appendFill is the fill percent of the buckets whose keys mostly grow
// (tickets by device and seq, leaves by window and index, entries by
// account and seq): bbolt's default of one half would leave each page
// split by an insert at its end half empty, doubling the file.
const appendFill = 0.9

// putAll writes ws in order, through the journal; a failed write aborts
// the batch, since part of the effects may be written.
func putAll(tx *store.Tx, ws []write) error {
	for _, w := range ws {
		switch string(w.bucket) {
		case string(bucketTickets), string(bucketLeaves), string(bucketEntries):
			tx.Bolt().Bucket(w.bucket).FillPercent = appendFill
		}
		if err := tx.Put(w.bucket, w.key, w.val); err != nil {
			return err
		}
	}
	return nil
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
		agg := rec.Aggregate(snap.GatewayID, bk.wire(seq))
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
	return bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Bolt()
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
					b, err := ws2.MarshalBinary()
					writes = append(writes, write{bucketWindows, append([]byte(nil), k...), b})
					return err
				}
				return nil
			}
			aggSeq++
			b, err := ws2.MarshalBinary()
			if err != nil {
				return err
			}
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
		return putAll(stx, writes)
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
//
// Reload rules: once an account has a record, the books hold its balance,
// kind and currency (a configured balance is an opening balance only; use
// a top-up), while its credit limit is the configured one, so a changed
// credit_limit takes effect at the next reload.
func loadAccount(tx *bolt.Tx, snap *Terms, id string) (metering.Account, error) {
	if v := tx.Bucket(bucketAccounts).Get([]byte(id)); v != nil {
		var a metering.Account
		if err := a.UnmarshalBinary(v); err != nil {
			return a, err
		}
		if c, ok := terms(snap).Accounts[id]; ok && c.Kind == a.Kind {
			a.CreditLimit = c.CreditLimit
		}
		return a, nil
	}
	a, ok := snap.Accounts[id]
	if !ok {
		return a, fmt.Errorf("account %q is not configured", id)
	}
	return a, nil
}

// spendKey keys what an account or a device spent.
func spendKey(kind, id string) []byte { return joinKey(kind, id) }

// spendRefusal answers a charge past a cap: insufficient funds with the
// reason spending_cap, so a device tells it from an empty account.
func spendRefusal(who string, a metering.Account, err error) error {
	if errors.Is(err, metering.ErrCapReached) {
		return withAvailable(&Refusal{Status: protocol.StatusInsufficientFunds, Reason: protocol.ReasonSpendingCap, Detail: who + ": " + err.Error()}, a)
	}
	return Reject(protocol.ReasonChargeOverflow, "%s: %v", who, err)
}

// withAvailable adds what account a has available to an
// insufficient-funds refusal (none when it overflows).
func withAvailable(r *Refusal, a metering.Account) *Refusal {
	if n, err := a.Available(); err == nil {
		r.Available, r.HasAvailable = int64(n), true
	}
	return r
}
