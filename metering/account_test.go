package metering_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

func eur(n metering.Nanos) metering.Money { return metering.Money{Nanos: n, Currency: "EUR"} }

func TestPrepaidRefusesWhatItCannotPay(t *testing.T) {
	a := metering.Account{ID: "kiosk-1", Kind: metering.Prepaid, Currency: "EUR"}
	_, a, err := a.TopUp(eur(1_000_000), 1, "pay-1")
	if err != nil {
		t.Fatal(err)
	}
	_, a, err = a.Charge(eur(999_999), 2, "d/1")
	if err != nil || a.Balance != 1 {
		t.Fatalf("charge within balance: balance %d, %v", a.Balance, err)
	}
	before := a
	if _, a, err = a.Charge(eur(2), 3, "d/2"); !errors.Is(err, metering.ErrInsufficientFunds) || a != before {
		t.Fatalf("charge past zero = %v, account %+v; want ErrInsufficientFunds and no change", err, a)
	}
	if _, _, err = a.Charge(metering.Money{Nanos: 1, Currency: "USD"}, 3, "d/3"); !errors.Is(err, metering.ErrCurrencyMismatch) {
		t.Fatalf("charge in USD to a EUR account = %v; want ErrCurrencyMismatch", err)
	}
	if _, _, err = a.TopUp(eur(-5), 4, "x"); !errors.Is(err, metering.ErrBadMoney) {
		t.Fatalf("negative top-up = %v", err)
	}
}

func TestPostpaidCreditLimit(t *testing.T) {
	a := metering.Account{ID: "fleet", Kind: metering.Postpaid, Currency: "EUR", CreditLimit: 500}
	_, a, err := a.Charge(eur(500), 1, "d/1")
	if err != nil || a.Balance != -500 {
		t.Fatalf("charge to the limit: %d, %v", a.Balance, err)
	}
	if _, _, err = a.Charge(eur(1), 2, "d/2"); !errors.Is(err, metering.ErrInsufficientFunds) {
		t.Fatalf("charge past the credit limit = %v", err)
	}
}

// TestReplayRebuildsBalance: a random history replays to the same account,
// and a tampered history is refused.
func TestReplayRebuildsBalance(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	opening := metering.Account{ID: "acct", Kind: metering.Prepaid, Currency: "EUR"}
	a := opening
	var log []metering.Entry
	for i := 0; i < 500; i++ {
		var e metering.Entry
		var err error
		if r.IntN(4) == 0 {
			e, a, err = a.TopUp(eur(metering.Nanos(1+r.Int64N(1e9))), int64(i), "pay")
		} else {
			e, a, err = a.Charge(eur(metering.Nanos(r.Int64N(1e8))), int64(i), "dev/seq")
		}
		if errors.Is(err, metering.ErrInsufficientFunds) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, e)
	}
	got, err := metering.Replay(opening, log)
	if err != nil || got != a {
		t.Fatalf("Replay = %+v, %v; want %+v", got, err, a)
	}
	if _, err := metering.Replay(opening, append(log[:10:10], log[11:]...)); err == nil {
		t.Fatal("Replay accepted a history with a missing entry")
	}
	if _, err := metering.Replay(opening, append(log[:10:10], log[9:]...)); err == nil {
		t.Fatal("Replay accepted a repeated entry")
	}
}
