package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Errors of the account operations.
var (
	// ErrUnknownAccount: the account is neither configured nor in the books.
	ErrUnknownAccount = errors.New("ledger: unknown account")
	// ErrRefConflict: an operation's reference was used before for
	// something else (another account or amount); nothing was done.
	ErrRefConflict = errors.New("ledger: reference already used for another operation")
	// ErrBadTopUp: the amount is not positive or not in the account's
	// currency; nothing was done.
	ErrBadTopUp = errors.New("ledger: bad top-up")
)

// Operation is one money-changing operator call as the audit log keeps
// it: what, when, by which credential, and what it did.
type Operation struct {
	Seq        uint64         `json:"seq"`  // audit log seq, from 1
	Kind       string         `json:"kind"` // "top_up"
	Ref        string         `json:"ref"`  // the caller's reference: the idempotency key
	Account    string         `json:"account"`
	Amount     metering.Nanos `json:"amount_nanos"`
	Currency   string         `json:"currency"`
	Time       int64          `json:"time_ms"`
	Credential string         `json:"credential"` // "socket", "token", "cert:NAME"
	EntrySeq   uint64         `json:"entry_seq"`  // the ledger entry it made
	// An adjustment's reason code, the operator's note and the voucher it
	// settles (Amount is then signed: negative for a debit).
	Reason  string `json:"reason,omitempty"`
	Note    string `json:"note,omitempty"`
	Voucher string `json:"voucher,omitempty"`
}

// An operation's record: the fields in order, then, for an adjustment,
// its reason, note and voucher (absent from older records).
func (o Operation) encode() []byte {
	w := metering.NewStateWriter().Uint(o.Seq).String(o.Kind).String(o.Ref).String(o.Account).Int(int64(o.Amount)).
		String(o.Currency).Int(o.Time).String(o.Credential).Uint(o.EntrySeq)
	if o.Reason != "" {
		w = w.String(o.Reason).String(o.Note).String(o.Voucher)
	}
	return w
}

func decodeOperation(b []byte) (Operation, error) {
	r := metering.NewStateReader(b, "operation")
	o := Operation{Seq: r.Uint(), Kind: r.String(), Ref: r.String(), Account: r.String(), Amount: metering.Nanos(r.Int()),
		Currency: r.String(), Time: r.Int(), Credential: r.String(), EntrySeq: r.Uint()}
	if r.Err() == nil && r.More() {
		o.Reason, o.Note, o.Voucher = r.String(), r.String(), r.String()
	}
	return o, r.Done()
}

// TopUpResult is what a top-up did, or did before (Repeated).
type TopUpResult struct {
	Operation
	Balance  metering.Nanos `json:"balance_nanos"` // after the top-up, or now for a repeat
	Repeated bool           `json:"repeated"`      // the reference was seen: nothing new was done
}

// Request names who asks the books for a change: the caller's reference
// (the idempotency key of a top-up) and the kind of credential that made
// the request ("socket", "token", "cert:NAME"), for the audit log.
type Request struct {
	Ref, Credential string
}

// TopUp credits amount to account, once per ref: the same ref again with
// the same account and amount returns the first result (Repeated), with
// anything else ErrRefConflict. The entry, the new balance and the audit
// record are committed together, with fsync, before TopUp returns.
func (bk *Books) TopUp(ctx context.Context, t *Terms, account string, amount metering.Money, by Request) (TopUpResult, error) {
	ref, credential := by.Ref, by.Credential
	var res TopUpResult
	if ref == "" || len(ref) > 128 {
		return res, fmt.Errorf("%w: a reference of 1..128 bytes is required", ErrBadTopUp)
	}
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		tx := stx.Raw()
		res = TopUpResult{}
		refKey := []byte("top_up/" + ref)
		if seq := getU64(tx.Bucket(bucketRefs).Get(refKey)); seq != 0 {
			o, err := decodeOperation(tx.Bucket(bucketAudit).Get(putU64(seq)))
			if err != nil {
				return err
			}
			if o.Account != account || o.Amount != amount.Nanos || o.Currency != string(amount.Currency) {
				return fmt.Errorf("%w: %q was a top-up of %s to %s", ErrRefConflict, ref,
					metering.Money{Nanos: o.Amount, Currency: metering.Currency(o.Currency)}, o.Account)
			}
			a, err := loadAccount(tx, t, account)
			if err != nil {
				return err
			}
			res.Operation, res.Balance, res.Repeated = o, a.Balance, true
			return nil
		}
		a, err := loadAccount(tx, t, account)
		if err != nil {
			return fmt.Errorf("%w: %q", ErrUnknownAccount, account)
		}
		o, bal, err := bk.credit(stx, t, a, creditEntry{amount: amount, kind: "top_up", ref: ref, refKey: refKey, credential: credential})
		if err != nil {
			return err
		}
		res.Operation, res.Balance = o, bal
		return nil
	})
	return res, err
}

// Adjustment is an operator's change to an account outside a ticket, a
// top-up and a voucher: Amount is added to the balance (negative: a
// debit), for Reason (a code such as "double_redemption", "goodwill",
// "correction"), with the operator's Note, maybe settling a Voucher (one
// credited twice).
type Adjustment struct {
	Amount  metering.Money
	Reason  string
	Note    string
	Voucher string
}

// ErrBadAdjustment: an adjustment without a reason code, with a bad one, a
// note too long, or an amount of zero or in another currency; nothing was
// done.
var ErrBadAdjustment = errors.New("ledger: bad adjustment")

// maxNote bounds an adjustment's note.
const maxNote = 512

// Adjust books an adjustment of account, once per ref, as TopUp does a
// top-up: the same ref again with the same account, amount and reason
// returns the first result (Repeated), with anything else ErrRefConflict.
// The entry, the new balance, the audit record (reason, note, voucher and
// credential) and the signed record upstream (a credit of kind
// adjustment, key 9 for a debit) commit together, with fsync.
func (bk *Books) Adjust(ctx context.Context, t *Terms, account string, adj Adjustment, by Request) (TopUpResult, error) {
	var res TopUpResult
	switch {
	case by.Ref == "" || len(by.Ref) > 128:
		return res, fmt.Errorf("%w: a reference of 1..128 bytes is required", ErrBadAdjustment)
	case !protocol.ValidName(adj.Reason, protocol.MaxReasonLen):
		return res, fmt.Errorf("%w: a reason code of 1..%d of [A-Za-z0-9._-] is required", ErrBadAdjustment, protocol.MaxReasonLen)
	case adj.Voucher != "" && !protocol.ValidName(adj.Voucher, protocol.MaxDeviceIDLen):
		return res, fmt.Errorf("%w: voucher %q is not a voucher id", ErrBadAdjustment, adj.Voucher)
	case len(adj.Note) > maxNote:
		return res, fmt.Errorf("%w: the note is longer than %d bytes", ErrBadAdjustment, maxNote)
	case adj.Amount.Nanos == 0:
		return res, fmt.Errorf("%w: an adjustment of zero", ErrBadAdjustment)
	}
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		var err error
		res, err = bk.adjust(stx, t, account, adj, by)
		return err
	})
	return res, err
}

// adjust is Adjust's transaction (and a control command's).
func (bk *Books) adjust(stx *store.Tx, t *Terms, account string, adj Adjustment, by Request) (TopUpResult, error) {
	tx := stx.Raw()
	var res TopUpResult
	refKey := []byte("adjustment/" + by.Ref)
	a, err := loadAccount(tx, t, account)
	if err != nil {
		return res, fmt.Errorf("%w: %q", ErrUnknownAccount, account)
	}
	if seq := getU64(tx.Bucket(bucketRefs).Get(refKey)); seq != 0 {
		o, err := decodeOperation(tx.Bucket(bucketAudit).Get(putU64(seq)))
		if err != nil {
			return res, err
		}
		if o.Account != account || o.Amount != adj.Amount.Nanos || o.Currency != string(adj.Amount.Currency) || o.Reason != adj.Reason {
			return res, fmt.Errorf("%w: %q was an adjustment of %s to %s for %s", ErrRefConflict, by.Ref,
				metering.Money{Nanos: o.Amount, Currency: metering.Currency(o.Currency)}, o.Account, o.Reason)
		}
		res.Operation, res.Balance, res.Repeated = o, a.Balance, true
		return res, nil
	}
	if adj.Amount.Currency != a.Currency {
		return res, fmt.Errorf("%w: account %q is in %s, the adjustment in %s", ErrBadAdjustment, account, a.Currency, adj.Amount.Currency)
	}
	o, bal, err := bk.credit(stx, t, a, creditEntry{amount: adj.Amount, kind: protocol.CreditAdjustment, ref: by.Ref, refKey: refKey,
		credential: by.Credential, reason: adj.Reason, note: adj.Note, voucher: adj.Voucher})
	res.Operation, res.Balance = o, bal
	return res, err
}

// creditEntry is a credit to book: its amount, its kind ("top_up",
// "voucher", "adjustment"), the caller's reference (its audit key refKey)
// and who made it; an adjustment's amount is signed, and it has a reason,
// maybe a note and a voucher it settles.
type creditEntry struct {
	amount                metering.Money
	kind, ref             string
	refKey                []byte
	credential            string
	reason, note, voucher string
}

// entry makes c's ledger entry on account a.
func (c creditEntry) entry(a metering.Account, now int64) (metering.Entry, metering.Account, error) {
	if c.kind == protocol.CreditAdjustment {
		return a.Adjust(c.amount, now, c.ref)
	}
	return a.TopUp(c.amount, now, c.ref)
}

// credit adds a top-up entry of amount to account a, records the
// operation in the audit log under refKey, and the account's opening
// balance if this is its first record; with a signer, it also puts a
// signed protocol.Credit in the outbox under the stream's next seq, so the
// credit goes upstream in order with the aggregates. It runs inside a
// store operation.
func (bk *Books) credit(stx *store.Tx, t *Terms, a metering.Account, c creditEntry) (Operation, metering.Nanos, error) {
	tx := stx.Raw() // the audit log's sequence is bbolt's own
	amount, kind, ref, refKey, credential := c.amount, c.kind, c.ref, c.refKey, c.credential
	opening := tx.Bucket(bucketAccounts).Get([]byte(a.ID)) == nil
	e, a2, err := c.entry(a, bk.now().UnixMilli())
	if err != nil {
		return Operation{}, 0, fmt.Errorf("%w: %v", ErrBadTopUp, err)
	}
	if err := checkBalance(a2, a.Balance, &e); err != nil {
		return Operation{}, 0, err
	}
	seq := tx.Bucket(bucketAudit).Sequence() + 1
	o := Operation{Seq: seq, Kind: kind, Ref: ref, Account: a.ID, Amount: amount.Nanos, Currency: string(amount.Currency),
		Time: e.Time, Credential: credential, EntrySeq: e.Seq, Reason: c.reason, Note: c.note, Voucher: c.voucher}
	eb, err := e.MarshalBinary()
	if err != nil {
		return Operation{}, 0, err
	}
	ab, err := a2.MarshalBinary()
	if err != nil {
		return Operation{}, 0, err
	}
	writes := []write{{bucketEntries, seqKey(e.Seq, a.ID), eb}, {bucketAccounts, []byte(a.ID), ab},
		{bucketAudit, putU64(seq), o.encode()}, {bucketRefs, refKey, putU64(seq)}}
	if opening {
		writes = append(writes, write{bucketOpenings, []byte(a.ID), encodeOpening(a.Balance)})
	}
	if bk.cfg.Signer != nil {
		aggSeq := getU64(tx.Bucket(bucketMeta).Get(metaAggSeq)) + 1
		abs := amount.Nanos
		if abs < 0 {
			abs = -abs
		}
		c := protocol.Credit{Gateway: terms(t).GatewayID, Seq: bk.wire(aggSeq), Account: a.ID, Amount: uint64(abs),
			Currency: string(amount.Currency), Time: uint64(e.Time), Kind: kind, Ref: strings.TrimPrefix(ref, "voucher:"),
			Debit: amount.Nanos < 0, Reason: c.reason, Voucher: c.voucher, Epoch: bk.cfg.Stream.Epoch}
		var enc protocol.Encoder
		b, err := enc.AppendCredit(nil, &c, bk.cfg.Signer)
		if err != nil {
			return o, 0, fmt.Errorf("credit record: %w", err)
		}
		rec := metering.NewStateWriter().String(a.ID).Int(e.Time)
		writes = append(writes, write{bucketOutbox, putU64(aggSeq), b}, write{bucketRecords, putU64(aggSeq), rec},
			write{bucketMeta, metaAggSeq, putU64(aggSeq)})
		bk.cfg.OnSeal("credit")
	}
	if err := tx.Bucket(bucketAudit).SetSequence(seq); err != nil {
		return o, 0, fmt.Errorf("%w: %v", store.ErrAbort, err)
	}
	if err := putAll(stx, writes); err != nil {
		return o, 0, err
	}
	return o, a2.Balance, nil
}

// AccountView is one account as the operator sees it.
type AccountView struct {
	ID          string         `json:"id"`
	Kind        string         `json:"kind"`
	Currency    string         `json:"currency"`
	Opening     metering.Nanos `json:"opening_nanos"`
	Balance     metering.Nanos `json:"balance_nanos"`
	Available   metering.Nanos `json:"available_nanos"`
	Reserved    metering.Nanos `json:"reserved_nanos"` // held by open grants: in the balance, not available
	CreditLimit metering.Nanos `json:"credit_limit_nanos"`
	Entries     uint64         `json:"entries"`
	// Grants are the account's grants, open and last closed per device
	// and meter (Account only; Accounts leaves them out).
	Grants []GrantView `json:"grants,omitempty"`
}

// GrantView is a grant as the operator sees it.
type GrantView struct {
	ID        uint64         `json:"id"`
	Device    string         `json:"device"`
	Meter     string         `json:"meter"`
	State     string         `json:"state"` // open, released, expired, idle
	Limit     uint64         `json:"limit"` // the register the device may serve up to
	Threshold uint64         `json:"threshold"`
	Granted   uint64         `json:"granted_units"`
	Used      uint64         `json:"used_units"`
	Over      uint64         `json:"over_units"` // charged past what it granted
	Reserved  metering.Nanos `json:"reserved_nanos"`
	Paid      metering.Nanos `json:"paid_nanos"`     // charged from the reservation
	Charged   metering.Nanos `json:"charged_nanos"`  // charged under it in all
	Released  metering.Nanos `json:"released_nanos"` // given back when it closed
	Expiry    int64          `json:"expiry_ms"`
	Closed    int64          `json:"closed_ms,omitempty"`
}

// grantView is g as the operator sees it.
func grantView(g *metering.Grant) GrantView {
	return GrantView{ID: g.ID, Device: g.Device, Meter: g.Meter, State: g.State.String(), Limit: g.Limit, Threshold: g.Threshold,
		Granted: g.Granted, Used: g.Used, Over: g.Over(), Reserved: g.Reserved, Paid: g.Paid, Charged: g.Charged, Released: g.Released,
		Expiry: g.Expiry, Closed: g.Closed}
}

// Accounts lists every account, configured or in the books, by id.
func (bk *Books) Accounts(t *Terms) ([]AccountView, error) {
	st := bk.st
	var out []AccountView
	err := st.View(func(tx *bolt.Tx) error {
		ids := map[string]bool{}
		tx.Bucket(bucketAccounts).ForEach(func(k, _ []byte) error { ids[string(k)] = true; return nil })
		if t != nil {
			for id := range t.Accounts {
				ids[id] = true
			}
		}
		for id := range ids {
			v, err := accountView(tx, t, id)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// Account returns one account.
func (bk *Books) Account(t *Terms, id string) (AccountView, error) {
	st := bk.st
	var v AccountView
	err := st.View(func(tx *bolt.Tx) error {
		var err error
		if v, err = accountView(tx, t, id); err != nil {
			return err
		}
		return tx.Bucket(bucketGrants).ForEach(func(_, b []byte) error {
			var g metering.Grant
			if err := g.UnmarshalBinary(b); err != nil {
				return err
			}
			if g.Account == id {
				v.Grants = append(v.Grants, grantView(&g))
			}
			return nil
		})
	})
	return v, err
}

func accountView(tx *bolt.Tx, t *Terms, id string) (AccountView, error) {
	var a metering.Account
	if v := tx.Bucket(bucketAccounts).Get([]byte(id)); v != nil {
		if err := a.UnmarshalBinary(v); err != nil {
			return AccountView{}, err
		}
	} else if o, ok := terms(t).Accounts[id]; ok {
		a = o
	} else {
		return AccountView{}, fmt.Errorf("%w: %q", ErrUnknownAccount, id)
	}
	avail, _ := a.Available()
	view := AccountView{ID: a.ID, Kind: a.Kind.String(), Currency: string(a.Currency), Balance: a.Balance, Available: avail, Reserved: a.Reserved,
		CreditLimit: a.CreditLimit, Entries: a.Seq, Opening: a.Balance}
	if v := tx.Bucket(bucketOpenings).Get([]byte(id)); v != nil {
		if o, err := decodeOpening(v); err == nil {
			view.Opening = o
		}
	}
	return view, nil
}

// AccountEntries returns an account's ledger entries made at or after
// since (Unix ms; 0 for all), in order.
func (bk *Books) AccountEntries(id string, since int64) ([]metering.Entry, error) {
	st := bk.st
	var out []metering.Entry
	err := st.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(id), 0)
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
			var e metering.Entry
			if err := e.UnmarshalBinary(v); err != nil {
				return err
			}
			if e.Time >= since {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// AuditLog returns the operator operations recorded, in order.
func (bk *Books) AuditLog() ([]Operation, error) {
	st := bk.st
	var out []Operation
	err := st.Scan(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			o, err := decodeOperation(v)
			if err != nil {
				return err
			}
			out = append(out, o)
			return nil
		})
	})
	return out, err
}

// terms returns t, or empty terms for a nil t (a read of the file alone).
func terms(t *Terms) *Terms {
	if t == nil {
		return &Terms{}
	}
	return t
}

// An account's opening balance, recorded when the account is first
// written, so that opening + top-ups − charges = balance is a check, not
// an identity.
func encodeOpening(n metering.Nanos) []byte { return metering.NewStateWriter().Int(int64(n)) }

func decodeOpening(b []byte) (metering.Nanos, error) {
	r := metering.NewStateReader(b, "opening balance")
	n := metering.Nanos(r.Int())
	return n, r.Done()
}

// ErrAccountChanged: the configuration gives an account that has state in
// the books another kind or currency.
var ErrAccountChanged = errors.New("ledger: account configuration contradicts the books")

// CheckAccounts compares the configured accounts with the books. A kind
// or currency that differs from an account's record is an error (money in
// the books would change meaning); a different opening balance is
// reported in ignored, since the books are the authority once an account
// has a record (a top-up changes a balance, not the configuration).
func (bk *Books) CheckAccounts(t *Terms) (ignored []string, err error) {
	st := bk.st
	var bad []string
	verr := st.View(func(tx *bolt.Tx) error {
		for id, c := range terms(t).Accounts {
			v := tx.Bucket(bucketAccounts).Get([]byte(id))
			if v == nil {
				continue
			}
			var a metering.Account
			if err := a.UnmarshalBinary(v); err != nil {
				return err
			}
			if a.Kind != c.Kind || a.Currency != c.Currency {
				bad = append(bad, fmt.Sprintf("%s is %s in %s in the books, %s in %s in the configuration", id, a.Kind, a.Currency, c.Kind, c.Currency))
				continue
			}
			if o, err := decodeOpening(tx.Bucket(bucketOpenings).Get([]byte(id))); err == nil && o != c.Balance {
				ignored = append(ignored, id)
			}
		}
		return nil
	})
	if verr != nil {
		return nil, verr
	}
	sort.Strings(bad)
	sort.Strings(ignored)
	if len(bad) > 0 {
		return ignored, fmt.Errorf("%w: %s", ErrAccountChanged, strings.Join(bad, "; "))
	}
	return ignored, nil
}
