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
}

func (o Operation) encode() []byte {
	return metering.NewStateWriter().Uint(o.Seq).String(o.Kind).String(o.Ref).String(o.Account).Int(int64(o.Amount)).
		String(o.Currency).Int(o.Time).String(o.Credential).Uint(o.EntrySeq)
}

func decodeOperation(b []byte) (Operation, error) {
	r := metering.NewStateReader(b, "operation")
	o := Operation{Seq: r.Uint(), Kind: r.String(), Ref: r.String(), Account: r.String(), Amount: metering.Nanos(r.Int()),
		Currency: r.String(), Time: r.Int(), Credential: r.String(), EntrySeq: r.Uint()}
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

// creditEntry is a credit to book: its amount, its kind ("top_up",
// "voucher"), the caller's reference (its audit key refKey) and who made
// it.
type creditEntry struct {
	amount     metering.Money
	kind, ref  string
	refKey     []byte
	credential string
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
	e, a2, err := a.TopUp(amount, bk.now().UnixMilli(), ref)
	if err != nil {
		return Operation{}, 0, fmt.Errorf("%w: %v", ErrBadTopUp, err)
	}
	seq := tx.Bucket(bucketAudit).Sequence() + 1
	o := Operation{Seq: seq, Kind: kind, Ref: ref, Account: a.ID, Amount: amount.Nanos, Currency: string(amount.Currency),
		Time: e.Time, Credential: credential, EntrySeq: e.Seq}
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
		c := protocol.Credit{Gateway: terms(t).GatewayID, Seq: bk.wire(aggSeq), Account: a.ID, Amount: uint64(amount.Nanos),
			Currency: string(amount.Currency), Time: uint64(e.Time), Kind: kind, Ref: strings.TrimPrefix(ref, "voucher:"),
			Epoch: bk.cfg.Stream.Epoch}
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
	CreditLimit metering.Nanos `json:"credit_limit_nanos"`
	Entries     uint64         `json:"entries"`
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
		v, err = accountView(tx, t, id)
		return err
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
	view := AccountView{ID: a.ID, Kind: a.Kind.String(), Currency: string(a.Currency), Balance: a.Balance, Available: avail,
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
