package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

// A top-up is one entry per reference: the same reference again is the
// same top-up, with another amount or account an error; each lands in
// the audit log with its credential, and the books still reconcile.
func TestTopUpOncePerReference(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	bk := New(st, Config{})
	terms := testTerms(t, 250_000_000) // 0.25 EUR opening
	five := metering.Money{Nanos: 5_000_000_000, Currency: "EUR"}
	r, err := bk.TopUp(ctx, terms, "home", five, Request{Ref: "pay-1", Credential: "socket"})
	if err != nil || r.Repeated || r.Balance != 5_250_000_000 || r.EntrySeq != 1 || r.Seq != 1 {
		t.Fatalf("first top-up: %+v, %v", r, err)
	}
	again, err := bk.TopUp(ctx, terms, "home", five, Request{Ref: "pay-1", Credential: "token"})
	if err != nil || !again.Repeated || again.EntrySeq != 1 || again.Credential != "socket" {
		t.Fatalf("the same reference again: %+v, %v; want the first top-up, repeated", again, err)
	}
	if _, err := bk.TopUp(ctx, terms, "home", metering.Money{Nanos: 1, Currency: "EUR"}, Request{Ref: "pay-1", Credential: "socket"}); !errors.Is(err, ErrRefConflict) {
		t.Fatalf("the reference with another amount: %v; want ErrRefConflict", err)
	}
	for _, tc := range []struct {
		account string
		m       metering.Money
		want    error
	}{
		{"nobody", five, ErrUnknownAccount},
		{"home", metering.Money{Nanos: 5, Currency: "USD"}, ErrBadTopUp},
		{"home", metering.Money{Nanos: 0, Currency: "EUR"}, ErrBadTopUp},
	} {
		if _, err := bk.TopUp(ctx, terms, tc.account, tc.m, Request{Ref: "pay-x-" + tc.account + string(tc.m.Currency), Credential: "socket"}); !errors.Is(err, tc.want) {
			t.Errorf("top-up of %s to %s: %v; want %v", tc.m, tc.account, err, tc.want)
		}
	}
	v, err := New(st, Config{}).Account(terms, "home")
	if err != nil || v.Opening != 250_000_000 || v.Balance != 5_250_000_000 || v.Entries != 1 {
		t.Fatalf("account view %+v, %v", v, err)
	}
	log, _ := New(st, Config{}).AuditLog()
	if len(log) != 1 || log[0].Kind != "top_up" || log[0].Ref != "pay-1" || log[0].Credential != "socket" {
		t.Fatalf("audit log %+v; want the one top-up", log)
	}
	rep, err := New(st, Config{}).Inspect(terms)
	if err != nil || !rep.Reconcile.Balanced || rep.Reconcile.TopUps != 5_000_000_000 || rep.Reconcile.Opening != 250_000_000 {
		t.Fatalf("reconcile %+v, %v", rep.Reconcile, err)
	}
}

// Reload rules: a changed credit limit applies to an account with state;
// a changed opening balance is ignored (and said); a changed kind or
// currency is refused.
func TestAccountConfigurationChanges(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	Init(ctx, st)
	bk := New(st, Config{})
	terms := &Terms{Accounts: map[string]metering.Account{"fleet": {ID: "fleet", Kind: metering.Postpaid, Currency: "EUR", CreditLimit: 1_000}}}
	if _, err := bk.TopUp(ctx, terms, "fleet", metering.Money{Nanos: 10, Currency: "EUR"}, Request{Ref: "r1", Credential: "socket"}); err != nil {
		t.Fatal(err)
	}
	terms.Accounts["fleet"] = metering.Account{ID: "fleet", Kind: metering.Postpaid, Currency: "EUR", CreditLimit: 5_000, Balance: 77}
	if got := bk.Available(terms, "fleet"); got != 5_010 {
		t.Fatalf("available after the credit limit went to 5000: %d; want 5010", got)
	}
	ignored, err := New(st, Config{}).CheckAccounts(terms)
	if err != nil || len(ignored) != 1 || ignored[0] != "fleet" {
		t.Fatalf("a changed opening balance: ignored %v, %v; want fleet ignored", ignored, err)
	}
	terms.Accounts["fleet"] = metering.Account{ID: "fleet", Kind: metering.Prepaid, Currency: "USD"}
	if _, err := New(st, Config{}).CheckAccounts(terms); !errors.Is(err, ErrAccountChanged) {
		t.Fatalf("a changed kind and currency: %v; want ErrAccountChanged", err)
	}
}
