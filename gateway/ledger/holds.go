package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Quarantine: a ticket that breaks a plausibility rule of one of its
// meters is held. It is committed like an accepted ticket (the device's
// seq and meter registers move, its bytes are kept), charged nothing,
// answered with StatusHeld, and its usage is kept in a hold record until
// an operator releases it (charged then, once) or voids it (dropped, with
// a reason). Each of the three goes upstream as a signed protocol.Hold in
// the aggregates' stream. See metering.Rules.Judge for why later tickets
// neither lose the held usage nor charge it again.

// Errors of the quarantine operations.
var (
	// ErrNoHold: no ticket of that device and seq is held.
	ErrNoHold = errors.New("ledger: no such held ticket")
	// ErrHoldSettled: the hold was already settled the other way (a
	// release of a voided hold, or a void of a released one).
	ErrHoldSettled = errors.New("ledger: the hold was already settled")
	// ErrReleaseRefused: the release cannot be charged now (the account
	// cannot pay, or the tariff is gone); nothing was done.
	ErrReleaseRefused = errors.New("ledger: the release cannot be charged")
)

// holdRecord is a held ticket: what it held and what became of it.
type holdRecord struct {
	Device, Account, Provider string
	Seq                       uint64          // the ticket's seq
	Rule                      protocol.Reason // the rule broken
	State                     string          // protocol.HoldHeld, HoldReleased or HoldVoided
	TicketTime                int64           // device time (Unix ms)
	HeldAt                    int64           // gateway time it was held
	Hash                      metering.Hash   // the ticket's hash, its Merkle leaf once released
	Usage                     []heldUsage
	// Set by the operator's release or void.
	SettledAt  int64
	Charged    metering.Nanos
	Note       string
	Credential string
	AuditSeq   uint64
}

// heldUsage is one meter's usage in a held ticket, with what pricing it
// needs at release: the tariff of the time and the usage's interval.
type heldUsage struct {
	Meter, Tariff string
	Usage         metering.Usage
}

func (h holdRecord) encode() []byte {
	w := metering.NewStateWriter().String(h.Device).String(h.Account).String(h.Provider).Uint(h.Seq).
		Uint(uint64(h.Rule)).String(h.State).Int(h.TicketTime).Int(h.HeldAt).String(string(h.Hash[:])).
		Uint(uint64(len(h.Usage)))
	for _, u := range h.Usage {
		w = w.String(u.Meter).String(u.Tariff).Int(u.Usage.From).Int(u.Usage.To).Uint(u.Usage.Quantity)
	}
	return w.Int(h.SettledAt).Int(int64(h.Charged)).String(h.Note).String(h.Credential).Uint(h.AuditSeq)
}

func decodeHoldRecord(b []byte) (holdRecord, error) {
	r := metering.NewStateReader(b, "hold record")
	h := holdRecord{Device: r.String(), Account: r.String(), Provider: r.String(), Seq: r.Uint(),
		Rule: protocol.Reason(r.Uint()), State: r.String(), TicketTime: r.Int(), HeldAt: r.Int()}
	copy(h.Hash[:], r.String())
	n := r.Uint()
	if n > protocol.MaxReadings {
		return h, fmt.Errorf("%w: hold record: %d meters", errRecord, n)
	}
	for i := uint64(0); i < n && r.Err() == nil; i++ {
		h.Usage = append(h.Usage, heldUsage{Meter: r.String(), Tariff: r.String(),
			Usage: metering.Usage{From: r.Int(), To: r.Int(), Quantity: r.Uint()}})
	}
	h.SettledAt, h.Charged, h.Note, h.Credential, h.AuditSeq = r.Int(), metering.Nanos(r.Int()), r.String(), r.String(), r.Uint()
	return h, r.Done()
}

// ruleReason is the receipt reason of a broken rule.
func ruleReason(v metering.Violation) protocol.Reason {
	switch v {
	case metering.ViolationFault:
		return protocol.ReasonRegisterFault
	case metering.ViolationBackwards:
		return protocol.ReasonRegisterBackwards
	case metering.ViolationClockSkew:
		return protocol.ReasonClockSkew
	case metering.ViolationJump:
		return protocol.ReasonRegisterJump
	}
	return protocol.ReasonRateTooHigh
}

// rules are the plausibility rules of one of the payer's meters: the
// device's own for the meter, else its tariff's.
func (p Payer) rules(t *Terms, meter string) *metering.Rules {
	if r, ok := p.Rules[meter]; ok && r != nil {
		return r
	}
	if tr := t.Tariffs.Get(p.Tariffs[meter]); tr != nil {
		return &tr.Rules
	}
	return &metering.Rules{}
}

// ticketInput is what decide decides on: the books' state, the terms, the
// payer, the ticket and its bytes, and the time.
type ticketInput struct {
	st ticketState
	t  *Terms
	// tariffs are the tariffs in force at the ticket's usage time, and
	// their version ("" without versions).
	tariffs       *metering.TariffSet
	tariffVersion string
	p             Payer
	tk            *protocol.Ticket
	raw           []byte
	now           int64
	// hash is the ticket's hash (metering.TicketHash of raw), made once.
	hash metering.Hash
}

// judgement is how a ticket's readings were judged: the device's state
// with its meters moved, each reading's usage and outcome, and the first
// rule a reading broke.
type judgement struct {
	ds       deviceState
	usage    []metering.Usage
	outcomes []metering.Outcome
	rule     metering.Violation
	// reason, when set, is why the ticket is held instead of the rule's
	// (grant_exceeded: usage under a grant that nothing covers).
	reason protocol.Reason
}

// holdTicket is decide's outcome for a ticket that broke j.rule: the
// meters move (j.ds), the ticket is kept, nothing is charged, and its
// usage is held. No I/O.
func holdTicket(in *ticketInput, j judgement) (ticketEffects, error) {
	st, p, tk, raw, now := in.st, in.p, in.tk, in.raw, in.now
	ds, usage, outcomes, rule := j.ds, j.usage, j.outcomes, j.rule
	why := j.reason
	if why == protocol.ReasonNone {
		why = ruleReason(rule)
	}
	h := holdRecord{Device: p.Device, Account: p.Account, Provider: p.Provider, Seq: tk.Seq, Rule: why,
		State: protocol.HoldHeld, TicketTime: int64(tk.Time), HeldAt: now, Hash: in.hash}
	for i, rd := range tk.Readings {
		if outcomes[i] == metering.Duplicate {
			continue
		}
		h.Usage = append(h.Usage, heldUsage{Meter: rd.Meter, Tariff: p.Tariffs[rd.Meter], Usage: usage[i]})
	}
	acct := st.account
	avail, _ := acct.Available()
	eff := ticketEffects{accepted: true, account: acct, balanceBefore: acct.Balance, reservedBefore: acct.Reserved, device: ds, aggSeq: st.aggSeq, hold: &h,
		receipt: protocol.Receipt{Device: p.Device, Seq: tk.Seq, Currency: string(acct.Currency), Status: protocol.StatusHeld,
			Reason: h.Rule, Balance: int64(avail), HasBalance: true},
		ticket: ticketRecord{Balance: int64(avail), Raw: raw}}
	if st.opening {
		b := st.account.Balance
		eff.opening = &b
	}
	eff.device.LastSeq = tk.Seq
	return eff, nil
}

// holdWrites returns what recording h (held, or just settled) writes:
// the hold record and, with a signer, its protocol.Hold in the outbox
// under seq, the stream's next seq.
func (bk *Books) holdWrites(t *Terms, h *holdRecord, seq uint64) ([]write, error) {
	ws := []write{{bucketHolds, seqKey(h.Seq, h.Device), h.encode()}}
	if bk.cfg.Signer == nil {
		return ws, nil
	}
	at := h.HeldAt
	if h.State != protocol.HoldHeld {
		at = h.SettledAt
	}
	rec := protocol.Hold{Gateway: terms(t).GatewayID, Seq: bk.wire(seq), Device: h.Device, Ticket: h.Seq, Account: h.Account,
		Provider: h.Provider, Action: h.State, Rule: h.Rule, Currency: string(terms(t).Accounts[h.Account].Currency),
		Time: uint64(max(at, 1)), Note: h.Note, Epoch: bk.cfg.Stream.Epoch}
	if h.State == protocol.HoldReleased {
		rec.Amount = uint64(h.Charged)
	}
	if rec.Currency == "" {
		rec.Currency = "XXX" // the account is no longer configured: ISO 4217's "no currency"
	}
	for _, u := range h.Usage {
		rec.Usage = append(rec.Usage, protocol.HoldReading{Meter: u.Meter, Quantity: u.Usage.Quantity})
	}
	var enc protocol.Encoder
	b, err := enc.AppendHold(nil, &rec, bk.cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("hold record: %w", err)
	}
	bk.cfg.OnSeal("hold")
	return append(ws, write{bucketOutbox, putU64(seq), b},
		write{bucketRecords, putU64(seq), metering.NewStateWriter().String(h.Account).Int(at)},
		write{bucketMeta, metaAggSeq, putU64(seq)}), nil
}

// Held is a held ticket as the operator sees it.
type Held struct {
	Device     string        `json:"device"`
	Seq        uint64        `json:"seq"`
	Account    string        `json:"account"`
	Provider   string        `json:"provider"`
	Rule       string        `json:"rule"`
	State      string        `json:"state"`
	TicketTime int64         `json:"ticket_time_ms"`
	HeldAt     int64         `json:"held_at_ms"`
	Usage      []HeldReading `json:"usage"`
	SettledAt  int64         `json:"settled_at_ms,omitempty"`
	Charged    uint64        `json:"charged_nanos,omitempty"`
	Note       string        `json:"note,omitempty"`
	Credential string        `json:"credential,omitempty"`
	Repeated   bool          `json:"repeated,omitempty"` // a release or void that was done before
}

// HeldReading is one meter's held usage.
type HeldReading struct {
	Meter    string `json:"meter"`
	Tariff   string `json:"tariff"`
	Quantity uint64 `json:"quantity"`
	From     int64  `json:"from_ms"`
	To       int64  `json:"to_ms"`
}

func (h holdRecord) view() Held {
	v := Held{Device: h.Device, Seq: h.Seq, Account: h.Account, Provider: h.Provider, Rule: h.Rule.String(), State: h.State,
		TicketTime: h.TicketTime, HeldAt: h.HeldAt, SettledAt: h.SettledAt, Charged: uint64(h.Charged), Note: h.Note,
		Credential: h.Credential}
	for _, u := range h.Usage {
		v.Usage = append(v.Usage, HeldReading{Meter: u.Meter, Tariff: u.Tariff, Quantity: u.Usage.Quantity, From: u.Usage.From, To: u.Usage.To})
	}
	return v
}

// Holds lists held tickets in device and seq order: all of them, or
// those in state (held, released, voided) and of device, when given.
func (bk *Books) Holds(state, device string) ([]Held, error) {
	st := bk.st
	out := []Held{}
	err := st.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHolds).ForEach(func(_, v []byte) error {
			h, err := decodeHoldRecord(v)
			if err != nil {
				return err
			}
			if (state == "" || h.State == state) && (device == "" || h.Device == device) {
				out = append(out, h.view())
			}
			return nil
		})
	})
	return out, err
}

// Hold returns one held ticket, or ErrNoHold.
func (bk *Books) Hold(device string, seq uint64) (Held, error) {
	st := bk.st
	var out Held
	err := st.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketHolds).Get(seqKey(seq, device))
		if v == nil {
			return fmt.Errorf("%w: %s/%d", ErrNoHold, device, seq)
		}
		h, err := decodeHoldRecord(v)
		out = h.view()
		return err
	})
	return out, err
}

// HoldSettlement is an operator's release or void of a held ticket: the
// device's seq, a note saying why, and the kind of credential that made
// the request (for the audit log).
type HoldSettlement struct {
	Device           string
	Seq              uint64
	Note, Credential string
}

// settle runs a release or a void of device/seq: it loads the hold, answers
// a repeat with the hold as it is (Repeated), refuses the other way with
// ErrHoldSettled, and else calls do and records the operation.
func (bk *Books) settle(ctx context.Context, t *Terms, action string, st HoldSettlement, do func(tx *bolt.Tx, h *holdRecord, now int64) ([]write, uint64, error)) (Held, error) {
	device, seq, note, credential := st.Device, st.Seq, st.Note, st.Credential
	var out Held
	if len(note) > protocol.MaxHoldNoteLen || strings.ContainsFunc(note, func(c rune) bool { return c < 0x20 || c > 0x7e }) {
		return out, fmt.Errorf("%w: a note is at most %d bytes of printable ASCII", ErrReleaseRefused, protocol.MaxHoldNoteLen)
	}
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		out = Held{}
		v := tx.Bucket(bucketHolds).Get(seqKey(seq, device))
		if v == nil {
			return fmt.Errorf("%w: %s/%d", ErrNoHold, device, seq)
		}
		h, err := decodeHoldRecord(v)
		if err != nil {
			return err
		}
		switch h.State {
		case action:
			out = h.view()
			out.Repeated = true
			return nil
		case protocol.HoldReleased, protocol.HoldVoided:
			return fmt.Errorf("%w: %s/%d was %s", ErrHoldSettled, device, seq, h.State)
		}
		now := bk.now().UnixMilli()
		ws, aggSeq, err := do(tx, &h, now)
		if err != nil {
			return err
		}
		h.State, h.SettledAt, h.Note, h.Credential = action, now, note, credential
		audit := tx.Bucket(bucketAudit)
		h.AuditSeq = audit.Sequence() + 1
		o := Operation{Seq: h.AuditSeq, Kind: strings.TrimSuffix(action, "d"), Ref: "hold/" + device + "/" + strconv.FormatUint(seq, 10),
			Account: h.Account, Amount: h.Charged, Currency: string(terms(t).Accounts[h.Account].Currency), Time: now,
			Credential: credential}
		if action == protocol.HoldVoided {
			o.Kind = "void"
		}
		hw, err := bk.holdWrites(t, &h, aggSeq+1)
		if err != nil {
			return err
		}
		ws = append(append(ws, hw...), write{bucketAudit, putU64(h.AuditSeq), o.encode()})
		if err := audit.SetSequence(h.AuditSeq); err != nil {
			return fmt.Errorf("%w: %v", store.ErrAbort, err)
		}
		if err := putAll(stx, ws); err != nil {
			return err
		}
		out = h.view()
		return nil
	})
	return out, err
}

// Void discards a held ticket's usage: nothing is ever charged for it.
// It is idempotent (a repeat returns the hold, Repeated) and refused for a
// released hold. The void, its note and credential go to the audit log
// and upstream.
func (bk *Books) Void(ctx context.Context, t *Terms, s HoldSettlement) (Held, error) {
	if s.Note == "" {
		return Held{}, fmt.Errorf("%w: a void needs a note saying why", ErrReleaseRefused)
	}
	return bk.settle(ctx, t, protocol.HoldVoided, s, func(tx *bolt.Tx, h *holdRecord, now int64) ([]write, uint64, error) {
		return nil, getU64(tx.Bucket(bucketMeta).Get(metaAggSeq)), nil
	})
}

// Release charges a held ticket's usage now, through the normal pricing
// at the time it was used (see releaseCharge), into the windows of the
// time it was used (a window sealed since goes out as a correction). It
// is idempotent and refused for a voided hold; an account that cannot pay
// refuses it (ErrReleaseRefused) with nothing done. Spending caps do not
// apply: a release is the operator's decision.
func (bk *Books) Release(ctx context.Context, t *Terms, s HoldSettlement) (Held, error) {
	return bk.settle(ctx, t, protocol.HoldReleased, s, func(tx *bolt.Tx, h *holdRecord, now int64) ([]write, uint64, error) {
		return bk.releaseWrites(tx, t, h, now)
	})
}

// releaseWrites prices and books a hold's usage. Pricing rule: usage of
// the billing period the (account, meter) pricing state is in is priced
// from that state, as if it came now (tiers and free allowance count it;
// time-of-use windows go by the time it was used). Usage of an earlier
// period is priced from a fresh state of its own period, which is not
// kept: its free allowance and tiers start from zero, and its carried
// remainder (under a nano per band) is dropped.
func (bk *Books) releaseWrites(tx *bolt.Tx, t *Terms, h *holdRecord, now int64) ([]write, uint64, error) {
	acct, err := loadAccount(tx, t, h.Account)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
	}
	var w writes
	items, total, err := priceHold(tx, t, h, &w, func(ms int64) (*metering.TariffSet, string, error) {
		return bk.tariffsAt(tx, t, ms)
	})
	if err != nil {
		return nil, 0, err
	}
	ref := h.Device + "/" + strconv.FormatUint(h.Seq, 10)
	before := acct.Balance
	if total > 0 {
		opening := tx.Bucket(bucketAccounts).Get([]byte(h.Account)) == nil
		entry, acct2, err := acct.Charge(metering.Money{Nanos: total, Currency: acct.Currency}, now, ref)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
		}
		marshal(&w, bucketEntries, seqKey(entry.Seq, acct.ID), entry)
		if opening {
			w.add(bucketOpenings, []byte(acct.ID), encodeOpening(acct.Balance))
		}
		if err := checkBalance(acct2, before, &entry); err != nil {
			return nil, 0, err
		}
		acct = acct2
		marshal(&w, bucketAccounts, []byte(acct.ID), acct)
	}
	h.Charged = total
	aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq))
	p := Payer{Device: h.Device, Account: h.Account, Provider: h.Provider}
	wins, err := addToWindows(t, p, itemsOf{cur: acct.Currency, hash: h.Hash, ref: ref}, items, aggSeq)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
	}
	if err := checkSeals(aggSeq, wins.seals, wins.aggSeq); err != nil {
		return nil, 0, err
	}
	for i, it := range items {
		marshal(&w, bucketWindows, joinKey(h.Provider, h.Account, it.meter), wins.states[i])
	}
	sw, err := bk.sealAll(tx, t, wins.seals)
	if err != nil {
		return nil, 0, err
	}
	w.list = append(append(w.list, sw...), wins.leaves...)
	tleaves := wins.tleaves
	if len(wins.lates) > 0 { // used in a window sealed since: into its slot's fold
		leaves, tl, folds, err := foldLate(tx, wins.lates, itemsOf{hash: h.Hash, ref: ref}, now)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
		}
		w.list = append(append(w.list, leaves...), folds...)
		tleaves = append(tleaves, tl...)
	}
	if err := rechargeTicket(tx, h, acct, tleaves, &w); err != nil {
		return nil, 0, err
	}
	return w.list, wins.aggSeq, w.err
}

// priceHold prices a hold's usage (see releaseWrites for the rule), adds
// the pricing states it moves to w, and returns the items for the
// windows and their total.
// The usage is priced by the tariff version in force when it was used
// (tariffsAt).
func priceHold(tx *bolt.Tx, t *Terms, h *holdRecord, w *writes, tariffsAt func(ms int64) (*metering.TariffSet, string, error)) ([]windowItem, metering.Nanos, error) {
	var total metering.Nanos
	var items []windowItem
	for _, u := range h.Usage {
		if u.Usage.Quantity == 0 {
			continue
		}
		set, version, err := tariffsAt(u.Usage.To)
		if err != nil {
			return nil, 0, err
		}
		tariff := set.Get(u.Tariff)
		if tariff == nil {
			return nil, 0, fmt.Errorf("%w: tariff %q is no longer configured", ErrReleaseRefused, u.Tariff)
		}
		ckey := joinKey(h.Account, u.Meter)
		var cs metering.ChargeState
		if v := tx.Bucket(bucketCharges).Get(ckey); v != nil {
			if err := cs.UnmarshalBinary(v); err != nil {
				return nil, 0, err
			}
		}
		past := cs.PeriodStart > tariff.PeriodOf(u.Usage.To)
		if past {
			cs = metering.ChargeState{}
		}
		ch, cs2, err := tariff.Price(cs, u.Usage)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: meter %s: %v", ErrReleaseRefused, u.Meter, err)
		}
		if total, err = total.Add(ch.Amount); err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrReleaseRefused, err)
		}
		if !past {
			marshal(w, bucketCharges, ckey, cs2)
		}
		var ws metering.WindowState
		if v := tx.Bucket(bucketWindows).Get(joinKey(h.Provider, h.Account, u.Meter)); v != nil {
			if err := ws.UnmarshalBinary(v); err != nil {
				return nil, 0, err
			}
		}
		items = append(items, windowItem{meter: u.Meter, state: ws, item: metering.Item{Time: h.TicketTime,
			Quantity: u.Usage.Quantity, Amount: ch.Amount, Ticket: h.Hash, Bands: ch.Parts(tariff), Tariff: version}})
	}
	return items, total, nil
}

// rechargeTicket rewrites a released ticket's record: it now says what it
// was charged, and where its leaves are, so a repeat is answered and
// proved like any other.
func rechargeTicket(tx *bolt.Tx, h *holdRecord, acct metering.Account, leaves []byte, w *writes) error {
	tkey := seqKey(h.Seq, h.Device)
	v := tx.Bucket(bucketTickets).Get(tkey)
	if v == nil {
		return nil
	}
	tr, err := decodeTicketRecord(v)
	if err != nil {
		return err
	}
	avail, _ := acct.Available()
	tr.Charged, tr.Balance, tr.Leaves = uint64(h.Charged), int64(avail), leaves
	w.add(bucketTickets, tkey, tr.encode())
	return nil
}
