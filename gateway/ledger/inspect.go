package ledger

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Report is what `farthing inspect` shows: the state file read in one
// consistent transaction, and the reconciliation of its money.
type Report struct {
	Gateway     string          `json:"gateway,omitempty"`
	StoreBytes  int64           `json:"store_bytes"`
	Devices     []DeviceReport  `json:"devices"`
	Accounts    []AccountReport `json:"accounts"`
	OpenWindows []WindowReport  `json:"open_windows"`
	Sealed      []WindowReport  `json:"sealed"`
	// Outbox is the number of aggregates some upstream has not confirmed.
	Outbox    int               `json:"outbox"`
	Upstreams map[string]uint64 `json:"upstream_confirmed_seq,omitempty"`
	Reconcile ReconcileReport   `json:"reconcile"`
}

// DeviceReport is one device's progress.
type DeviceReport struct {
	ID       string `json:"id"`
	LastSeq  uint64 `json:"last_seq"`
	Accepted int    `json:"accepted_tickets"`
}

// AccountReport is one account's ledger.
type AccountReport struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Balance  string `json:"balance"`
	Entries  uint64 `json:"entries"`
	Currency string `json:"currency"`
}

// WindowReport is an open or sealed window.
type WindowReport struct {
	Seq      uint64 `json:"seq,omitempty"`
	Provider string `json:"provider"`
	Account  string `json:"account"`
	Meter    string `json:"meter"`
	Start    int64  `json:"start_ms"`
	End      int64  `json:"end_ms"`
	Quantity uint64 `json:"quantity"`
	Amount   string `json:"amount"`
	Tickets  uint64 `json:"tickets"`
	Reason   string `json:"reason,omitempty"`
	Corrects uint64 `json:"corrects,omitempty"`
}

// ReconcileReport adds up the money; every equation must hold to the
// nano: what receipts said was charged = what the ledger debited = what
// the windows (open, late and sealed) hold for providers; and the accounts'
// opening balances + top-ups + adjustments − charges = their balances.
type ReconcileReport struct {
	ReceiptsCharged metering.Nanos `json:"receipts_charged_nanos"`
	LedgerCharged   metering.Nanos `json:"ledger_charged_nanos"`
	WindowsOpen     metering.Nanos `json:"windows_open_nanos"`
	WindowsSealed   metering.Nanos `json:"windows_sealed_nanos"`
	// WindowsLate is the late usage gathered in folds that have not
	// sealed as corrections yet (fold.go).
	WindowsLate metering.Nanos `json:"windows_late_nanos"`
	Tickets     uint64         `json:"tickets"`
	Opening     metering.Nanos `json:"opening_nanos"`
	TopUps      metering.Nanos `json:"top_ups_nanos"`
	Adjustments metering.Nanos `json:"adjustments_nanos"`
	Balances    metering.Nanos `json:"balances_nanos"`
	// Reserved is what the accounts' grants reserve (in their balances,
	// not available); Available is Balances less Reserved (credit limits
	// not counted). Grants adds up the grants themselves: their open
	// reservations must equal Reserved.
	Reserved  metering.Nanos `json:"reserved_nanos"`
	Available metering.Nanos `json:"available_nanos"`
	Grants    GrantLine      `json:"grants"`
	// Currencies splits the money by currency, one line each in currency
	// order: the sums above add every currency's nanos together, which
	// checks the books but is no amount of money.
	Currencies []CurrencyLine `json:"currencies"`
	Balanced   bool           `json:"balanced"`
	// Held is the quarantine's own line: held usage is in no sum above
	// until it is released.
	Held HeldLine `json:"held"`
}

// CurrencyLine is one currency's money in the books, nanos: what the
// ledger charged, the accounts' balances and what grants reserve.
type CurrencyLine struct {
	Currency string         `json:"currency"`
	Charged  metering.Nanos `json:"charged_nanos"`
	Balances metering.Nanos `json:"balances_nanos"`
	Reserved metering.Nanos `json:"reserved_nanos"`
}

// GrantLine adds up the grants the books hold (open and last closed per
// device and meter): what open ones reserve, and over all of them what
// was reserved, paid from reservations, given back, charged under them,
// and the units charged past what they granted.
type GrantLine struct {
	Open      int            `json:"open"`
	Closed    int            `json:"closed"`
	Reserved  metering.Nanos `json:"reserved_nanos"`
	Held      metering.Nanos `json:"held_nanos"`
	Paid      metering.Nanos `json:"paid_nanos"`
	Released  metering.Nanos `json:"released_nanos"`
	Charged   metering.Nanos `json:"charged_nanos"`
	OverUnits uint64         `json:"over_units"`
}

// HeldLine counts held tickets by what became of them; Released is what
// their releases charged (a part of ReceiptsCharged).
type HeldLine struct {
	Open     int            `json:"open"`
	Released int            `json:"released"`
	Voided   int            `json:"voided"`
	Charged  metering.Nanos `json:"released_charged_nanos"`
}

// Inspect reads the store in one read transaction. Sums are in nanos of
// all currencies together: with several currencies, each sum still agrees
// with the others because every ticket is in one currency.
func (bk *Books) Inspect(snap *Terms) (*Report, error) {
	st := bk.st
	if err := CheckSchema(st); err != nil {
		return nil, err
	}
	rep := &Report{StoreBytes: st.Stats().FileBytes}
	if snap != nil {
		rep.Gateway = snap.GatewayID
	}
	err := st.Scan(func(tx *bolt.Tx) error {
		for _, read := range []func(*bolt.Tx, *Report){inspectTickets, inspectAccounts, inspectEntries, inspectWindows, inspectLate,
			inspectFolded, inspectHolds, inspectGrants, inspectOutbox, inspectSealed, inspectCurrencies} {
			read(tx, rep)
		}
		return nil
	})
	sort.Slice(rep.Devices, func(i, j int) bool { return rep.Devices[i].ID < rep.Devices[j].ID })
	rc := &rep.Reconcile
	rc.Balanced = rc.ReceiptsCharged == rc.LedgerCharged && rc.LedgerCharged == rc.WindowsOpen+rc.WindowsLate+rc.WindowsSealed &&
		rc.Opening+rc.TopUps+rc.Adjustments-rc.LedgerCharged == rc.Balances && rc.Reserved == rc.Grants.Reserved
	rc.Available = rc.Balances - rc.Reserved
	return rep, err
}

// inspectTickets adds up the receipts of the tickets kept and lists the devices with how many each has.
func inspectTickets(tx *bolt.Tx, rep *Report) {
	accepted := map[string]int{}
	tx.Bucket(bucketTickets).ForEach(func(k, v []byte) error {
		if r, err := decodeTicketRecord(v); err == nil {
			rep.Reconcile.ReceiptsCharged += metering.Nanos(r.Charged)
			rep.Reconcile.Tickets++
			if i := bytes.IndexByte(k, 0); i > 0 {
				accepted[string(k[:i])]++
			}
		}
		return nil
	})
	tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
		ds, _ := decodeDeviceState(v)
		rep.Devices = append(rep.Devices, DeviceReport{ID: string(k), LastSeq: ds.LastSeq, Accepted: accepted[string(k)]})
		return nil
	})
}

// inspectAccounts lists the accounts and adds up their balances and opening balances.
func inspectAccounts(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
		var a metering.Account
		if a.UnmarshalBinary(v) == nil {
			rep.Reconcile.Balances += a.Balance
			rep.Reconcile.Reserved += a.Reserved
			if o, err := decodeOpening(tx.Bucket(bucketOpenings).Get(k)); err == nil {
				rep.Reconcile.Opening += o
			}
			rep.Accounts = append(rep.Accounts, AccountReport{ID: a.ID, Kind: a.Kind.String(), Balance: metering.Money{Nanos: a.Balance, Currency: a.Currency}.String(),
				Entries: a.Seq, Currency: string(a.Currency)})
		}
		return nil
	})
}

// inspectEntries adds up the ledger entries by kind.
func inspectEntries(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
		var e metering.Entry
		if e.UnmarshalBinary(v) != nil {
			return nil
		}
		switch e.Kind {
		case metering.EntryCharge:
			rep.Reconcile.LedgerCharged -= e.Amount
		case metering.EntryTopUp:
			rep.Reconcile.TopUps += e.Amount
		default:
			rep.Reconcile.Adjustments += e.Amount
		}
		return nil
	})
}

// inspectWindows lists the open windows and adds up what they hold.
func inspectWindows(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketWindows).ForEach(func(k, v []byte) error {
		var ws metering.WindowState
		key := splitKey(k)
		if ws.UnmarshalBinary(v) == nil && ws.Open.End != 0 && len(key) == 3 {
			o := ws.Open
			rep.Reconcile.WindowsOpen += o.Amount
			rep.OpenWindows = append(rep.OpenWindows, WindowReport{Provider: key[0], Account: key[1], Meter: key[2], Start: o.Start, End: o.End,
				Quantity: o.Quantity, Amount: metering.Money{Nanos: o.Amount, Currency: o.Currency}.String(), Tickets: o.Tickets})
		}
		return nil
	})
}

// inspectLate adds up the folds not sealed yet.
func inspectLate(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketLate).ForEach(func(_, v []byte) error {
		var f metering.Fold
		if f.UnmarshalBinary(v) == nil {
			rep.Reconcile.WindowsLate += f.Amount
		}
		return nil
	})
}

// inspectFolded adds what pruning folded into running totals.
func inspectFolded(tx *bolt.Tx, rep *Report) {
	// What pruning removed, as its running totals.
	meta := tx.Bucket(bucketMeta)
	ft, fs, fh := counters(meta, metaFoldedTickets, 2), counters(meta, metaFoldedSealed, 2), counters(meta, metaFoldedHolds, 3)
	rep.Reconcile.ReceiptsCharged += metering.Nanos(ft[0])
	rep.Reconcile.Tickets += ft[1]
	rep.Reconcile.WindowsSealed += metering.Nanos(fs[0])
	rep.Reconcile.Held.Released += int(fh[0])
	rep.Reconcile.Held.Voided += int(fh[1])
	rep.Reconcile.Held.Charged += metering.Nanos(fh[2])
	tx.Bucket(bucketFolded).ForEach(func(_, v []byte) error {
		if f, err := decodeFoldedDay(v); err == nil {
			rep.Reconcile.LedgerCharged -= f.Charges
			rep.Reconcile.TopUps += f.TopUps
			rep.Reconcile.Adjustments += f.Adjustments
		}
		return nil
	})
}

// inspectCurrencies splits the accounts' money by currency.
func inspectCurrencies(tx *bolt.Tx, rep *Report) {
	cur := map[string]string{} // account → currency
	lines := map[string]*CurrencyLine{}
	line := func(c string) *CurrencyLine {
		if lines[c] == nil {
			lines[c] = &CurrencyLine{Currency: c}
		}
		return lines[c]
	}
	tx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
		var a metering.Account
		if a.UnmarshalBinary(v) == nil {
			cur[a.ID] = string(a.Currency)
			l := line(string(a.Currency))
			l.Balances += a.Balance
			l.Reserved += a.Reserved
		}
		return nil
	})
	tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
		var e metering.Entry
		if e.UnmarshalBinary(v) == nil && e.Kind == metering.EntryCharge {
			line(cur[e.Account]).Charged -= e.Amount
		}
		return nil
	})
	tx.Bucket(bucketFolded).ForEach(func(_, v []byte) error {
		if f, err := decodeFoldedDay(v); err == nil {
			line(cur[f.Account]).Charged -= f.Charges
		}
		return nil
	})
	for _, c := range slices.Sorted(maps.Keys(lines)) {
		rep.Reconcile.Currencies = append(rep.Reconcile.Currencies, *lines[c])
	}
}

// inspectGrants adds up the grants.
func inspectGrants(tx *bolt.Tx, rep *Report) {
	gl := &rep.Reconcile.Grants
	tx.Bucket(bucketGrants).ForEach(func(_, v []byte) error {
		var g metering.Grant
		if g.UnmarshalBinary(v) != nil {
			return nil
		}
		if g.Open() {
			gl.Open++
		} else {
			gl.Closed++
		}
		gl.Reserved += g.Reserved
		gl.Held += g.Held
		gl.Paid += g.Paid
		gl.Released += g.Released
		gl.Charged += g.Charged
		gl.OverUnits += g.Over()
		return nil
	})
}

// inspectHolds counts the held tickets by state and what releases charged.
func inspectHolds(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketHolds).ForEach(func(_, v []byte) error {
		h, err := decodeHoldRecord(v)
		if err != nil {
			return nil
		}
		switch h.State {
		case protocol.HoldHeld:
			rep.Reconcile.Held.Open++
		case protocol.HoldReleased:
			rep.Reconcile.Held.Released++
			rep.Reconcile.Held.Charged += h.Charged
		default:
			rep.Reconcile.Held.Voided++
		}
		return nil
	})
}

// inspectOutbox reads the outbox size and each upstream's progress.
func inspectOutbox(tx *bolt.Tx, rep *Report) {
	rep.Outbox = tx.Bucket(bucketOutbox).Stats().KeyN
	tx.Bucket(bucketMeta).ForEach(func(k, v []byte) error {
		if name, ok := strings.CutPrefix(string(k), "upstream/"); ok {
			if rep.Upstreams == nil {
				rep.Upstreams = map[string]uint64{}
			}
			rep.Upstreams[name] = getU64(v)
		}
		return nil
	})
}

// inspectSealed lists the sealed windows and corrections and adds up their amounts.
func inspectSealed(tx *bolt.Tx, rep *Report) {
	tx.Bucket(bucketSealed).ForEach(func(k, v []byte) error {
		r, err := decodeSealedRecord(v)
		if err != nil {
			return nil
		}
		rep.Reconcile.WindowsSealed += r.Amount
		reason := r.Reason.String()
		if r.Corrects != 0 || r.Reason == 0 {
			reason = "correction"
		}
		rep.Sealed = append(rep.Sealed, WindowReport{Seq: getU64(k), Provider: r.Provider, Account: r.Account, Meter: r.Meter,
			Start: r.Start, End: r.End, Quantity: r.Quantity, Amount: metering.Money{Nanos: r.Amount, Currency: r.Currency}.String(),
			Tickets: r.Tickets, Reason: reason, Corrects: r.Corrects})
		return nil
	})
}

// Entries calls fn with every ledger entry, by account and then entry
// seq. A stored entry that does not decode is an error.
func (bk *Books) Entries(fn func(account string, e metering.Entry) error) error {
	st := bk.st
	return st.Scan(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			var e metering.Entry
			if err := e.UnmarshalBinary(v); err != nil {
				return err
			}
			return fn(e.Account, e)
		})
	})
}

// Tickets calls fn with the device and seq of every accepted ticket the
// books keep, by device and then seq.
func (bk *Books) Tickets(fn func(device string, seq uint64) error) error {
	st := bk.st
	return st.Scan(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTickets).ForEach(func(k, _ []byte) error {
			i := bytes.IndexByte(k, 0)
			if i < 0 || len(k) != i+9 {
				return fmt.Errorf("%w: ticket key %x", errRecord, k)
			}
			return fn(string(k[:i]), binary.BigEndian.Uint64(k[i+1:]))
		})
	})
}
