package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/demo"
	"github.com/farthing-iot/farthing/metering"
)

// TestDemoReconciles runs the whole demo, short: a gateway, six devices of
// both key types, three account kinds, real MQTT, a real state file, and
// the books must balance to the nano.
func TestDemoReconciles(t *testing.T) {
	var out bytes.Buffer
	res, err := demo.Run(context.Background(), demo.Options{Rate: 400, Duration: 2 * time.Second, Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !res.Balanced || !strings.Contains(out.String(), "BALANCED") {
		t.Fatalf("demo did not balance:\n%s", out.String())
	}
	s := res.Sim
	if s.Sent < 400 || s.Accepted+s.InsufficientFunds+s.Duplicates != s.Sent || s.Missing != 0 {
		t.Fatalf("sim report: %+v", s)
	}
	if s.InsufficientFunds == 0 {
		t.Errorf("the kiosk's prepaid balance never ran out: %+v", s)
	}
	// Mid-run the kiosk is topped up by a voucher and goes on: it has
	// charge entries besides the voucher's, and the top-ups are the
	// voucher's 20 EUR.
	rc := res.Inspect.Reconcile
	// The charger's session under a grant: asked before it served, asked
	// again at the threshold, charged exactly its usage from the
	// reservation, and nothing left reserved once it released.
	if cs := res.Session; cs.Err != nil || cs.Used != 3000 || cs.AskedAgainAt == 0 || cs.Paid != cs.Charged || cs.Charged == 0 ||
		cs.Released == 0 || rc.Reserved != 0 || rc.Grants.Held != cs.Paid+cs.Released || !strings.Contains(out.String(), "charger session under a grant") {
		t.Errorf("charger session %+v; books %+v", cs, rc.Grants)
	}
	if !strings.Contains(out.String(), "voucher V-DEMO-0001 redeemed") || rc.TopUps != 20_000_000_000 {
		t.Errorf("no voucher redeemed mid-run (top-ups %d):\n%s", rc.TopUps, out.String())
	}
	for _, a := range res.Inspect.Accounts {
		if a.ID == "kiosk" && a.Entries < 2 {
			t.Errorf("the kiosk was not served after the voucher: %+v", a)
		}
	}
	// The providers' wallets paid out: two payees and a platform fee, and
	// paid + fees + carried + pending = what the ledger charged.
	if len(res.Payouts) == 0 || len(res.Payouts[0].Payees) < 2 || res.Payouts[0].Fee == 0 {
		t.Errorf("no payout to two payees with a fee: %+v", res.Payouts)
	}
	var all metering.Nanos
	for _, w := range res.Wallets {
		if !w.Balanced {
			t.Errorf("wallet %+v does not balance", w)
		}
		all += w.Paid + w.Fees + w.Carried + w.Pending
	}
	if all != rc.LedgerCharged {
		t.Errorf("paid + fees + carried + pending = %d; the ledger charged %d", all, rc.LedgerCharged)
	}
	if rc.Opening+rc.TopUps-rc.LedgerCharged != rc.Balances {
		t.Errorf("opening %d + top-ups %d - charges %d != balances %d", rc.Opening, rc.TopUps, rc.LedgerCharged, rc.Balances)
	}
	var received uint64
	for _, tot := range res.Received.Totals {
		received += tot.Amount
	}
	if received != uint64(res.Inspect.Reconcile.LedgerCharged) || res.Inspect.Outbox != 0 {
		t.Errorf("providers received %d; ledger %d; outbox %d", received, res.Inspect.Reconcile.LedgerCharged, res.Inspect.Outbox)
	}
	if res.Inspect.Reconcile.LedgerCharged == 0 || len(res.Inspect.Sealed) == 0 {
		t.Errorf("nothing charged or nothing sealed: %+v", res.Inspect.Reconcile)
	}
	t.Logf("\n%s", out.String())
}
