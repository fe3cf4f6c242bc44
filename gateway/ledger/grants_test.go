package ledger

import (
	"errors"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// grantBooks is books on a real state file with a settable clock.
type grantBooks struct {
	*chainBooks
}

func newGrantBooks(t *testing.T, balance metering.Nanos) *grantBooks {
	cb := newChainBooks(t)
	cb.terms = testTerms(t, balance)
	cb.terms.Grants = metering.GrantTerms{Validity: 10 * time.Minute, Idle: time.Minute}
	return &grantBooks{cb}
}

// do runs op in one store operation and returns its receipt, or its
// refusal as the error.
func (gb *grantBooks) do(op func(tx *store.Tx) (protocol.Receipt, error)) (protocol.Receipt, error) {
	var rc protocol.Receipt
	err := gb.st.Do(gb.ctx, func(tx *store.Tx) error {
		var err error
		rc, err = op(tx)
		return err
	})
	return rc, err
}

func (gb *grantBooks) grant(p Payer, req, register, units uint64) (protocol.Receipt, error) {
	return gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		return gb.bk.Grant(tx, gb.terms, p, &protocol.GrantRequest{Device: p.Device, Request: req, Meter: "energy_wh", Register: register, Units: units})
	})
}

func (gb *grantBooks) ticket(p Payer, seq, register, grant uint64) protocol.Receipt {
	gb.t.Helper()
	tk := &protocol.Ticket{Device: p.Device, Seq: seq, Time: uint64(gb.now.UnixMilli()), Readings: []protocol.Reading{{Meter: "energy_wh", Register: register}}, Grant: grant}
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	var enc protocol.Encoder
	raw, err := enc.AppendTicket(nil, tk, mac)
	if err != nil {
		gb.t.Fatal(err)
	}
	rc, err := gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		rc, _, err := gb.bk.Apply(tx, gb.terms, p, tk, raw)
		return rc, err
	})
	if err != nil {
		gb.t.Fatalf("ticket %d: %v", seq, err)
	}
	return rc
}

func (gb *grantBooks) reconcile() ReconcileReport {
	gb.t.Helper()
	rep, err := gb.bk.Inspect(gb.terms)
	if err != nil || !rep.Reconcile.Balanced {
		gb.t.Fatalf("books do not reconcile: %+v, %v", rep.Reconcile, err)
	}
	return rep.Reconcile
}

// TestGrantSession: a charger's session under a grant — grant, use,
// re-grant at the threshold, release — is charged exactly its usage from
// the reservation; the rest goes back; the balance never moves for a
// reservation; the books reconcile at every step.
func TestGrantSession(t *testing.T) {
	gb := newGrantBooks(t, 10_000_000_000) // 10 EUR; energy is 0.30 EUR per kWh: 300,000 nanos per Wh
	p := testPayer
	if rc := gb.ticket(p, 1, 1000, 0); rc.Status != protocol.StatusAccepted { // the meter's baseline
		t.Fatalf("baseline %+v", rc)
	}
	rc, err := gb.grant(p, 2, 1000, 10_000)
	if err != nil || !rc.IsGrant() || rc.Grant.Limit != 11_000 || rc.Grant.Threshold != 9_000 || rc.Grant.Reserved != 3_000_000_000 ||
		rc.Balance != 7_000_000_000 || rc.Grant.Validity != 600_000 {
		t.Fatalf("grant: %+v, %v", rc, err)
	}
	if again, _ := gb.grant(p, 2, 1000, 10_000); again.Grant != rc.Grant {
		t.Fatalf("the same request again: %+v; want the same grant", again.Grant)
	}
	if _, err := gb.grant(p, 1, 1000, 10); !isRefusal(err, protocol.ReasonGrantStale) {
		t.Fatalf("an older request: %v; want grant_stale", err)
	}
	if r := gb.reconcile(); r.Reserved != 3_000_000_000 || r.Grants.Open != 1 {
		t.Fatalf("after the grant: %+v", r)
	}
	gb.now = gb.now.Add(10 * time.Second)
	r3 := gb.ticket(p, 3, 9_500, 2)
	if r3.Status != protocol.StatusAccepted || r3.Charged != 2_550_000_000 || r3.Balance != 7_000_000_000 {
		t.Fatalf("8.5 kWh under the grant: %+v; want 2.55 EUR charged from the reservation, 7 EUR still available", r3)
	}
	rc4, err := gb.grant(p, 4, 9_500, 10_000) // at the threshold: 10 kWh more
	if err != nil || rc4.Grant.ID != 2 || rc4.Grant.Limit != 21_000 || rc4.Grant.Reserved != 3_450_000_000 {
		t.Fatalf("re-grant at the threshold: %+v, %v", rc4.Grant, err)
	}
	gb.now = gb.now.Add(10 * time.Second)
	gb.ticket(p, 5, 12_000, 2)
	if _, err := gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		return gb.bk.ReleaseGrant(tx, gb.terms, p, &protocol.Release{Device: p.Device, Request: 6, Grant: 2, Register: 12_500})
	}); !isRefusal(err, protocol.ReasonGrantPending) {
		t.Fatalf("a release above what was charged: %v; want grant_pending", err)
	}
	rel, err := gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		return gb.bk.ReleaseGrant(tx, gb.terms, p, &protocol.Release{Device: p.Device, Request: 7, Grant: 2, Register: 12_000})
	})
	if err != nil || rel.Grant.Closed != protocol.GrantReleased || rel.Grant.Reserved != 0 || rel.Balance != 6_700_000_000 {
		t.Fatalf("release: %+v, %v; want closed, 6.70 EUR available", rel, err)
	}
	// The audit data say which grant each charge came from.
	if err := gb.bk.CloseWindows(gb.ctx, gb.terms, gb.now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	bundles, _, err := gb.bk.AuditBundles(gb.terms, 10)
	if err != nil || len(bundles) != 1 || len(bundles[0].Leaves) != 2 {
		t.Fatalf("audit bundles %+v, %v; want one with the two charged tickets", bundles, err)
	}
	for _, l := range bundles[0].Leaves {
		if want := map[string]uint64{"plug-1/3": 2, "plug-1/5": 2}[l.Ticket]; l.Grant != want {
			t.Errorf("audit leaf %s names grant %d; want %d", l.Ticket, l.Grant, want)
		}
	}
	r := gb.reconcile()
	if r.Reserved != 0 || r.Grants.Paid != 3_300_000_000 || r.Grants.Released != 2_700_000_000 || r.Grants.Held != 6_000_000_000 || r.LedgerCharged != 3_300_000_000 {
		t.Fatalf("after the release: %+v", r)
	}
}

func isRefusal(err error, reason protocol.Reason) bool {
	var rf *Refusal
	return errors.As(err, &rf) && rf.Reason == reason
}

// TestGrantRace: an account with funds for one grant, two devices asking:
// one is granted, the other refused before it serves; then the granted
// device's usage is charged even though nothing else is available.
func TestGrantRace(t *testing.T) {
	gb := newGrantBooks(t, 3_000_000_000) // 10 kWh
	a, b := testPayer, testPayer
	b.Device = "plug-2"
	if rc, err := gb.grant(a, 1, 0, 10_000); err != nil || rc.Grant.Reserved != 3_000_000_000 {
		t.Fatalf("first grant: %+v, %v", rc, err)
	}
	_, err := gb.grant(b, 1, 0, 10_000)
	var rf *Refusal
	if !errors.As(err, &rf) || rf.Status != protocol.StatusInsufficientFunds || rf.Available != 0 {
		t.Fatalf("second grant: %v; want insufficient funds with nothing available", err)
	}
	gb.ticket(a, 2, 0, 1)
	if rc := gb.ticket(a, 3, 10_000, 1); rc.Status != protocol.StatusAccepted || rc.Charged != 3_000_000_000 {
		t.Fatalf("the whole grant used: %+v", rc)
	}
	// The device ignores its limit: 1 kWh more, which nothing covers, is held.
	if rc := gb.ticket(a, 4, 11_000, 1); rc.Status != protocol.StatusHeld || rc.Reason != protocol.ReasonGrantExceeded {
		t.Fatalf("usage past the grant with nothing available: %+v; want held, grant_exceeded", rc)
	}
	r := gb.reconcile()
	if r.Held.Open != 1 || r.Grants.Charged != 3_000_000_000 {
		t.Fatalf("%+v", r)
	}

	// Two grants on one account: a device that overruns its own grant is
	// never paid from the other's reservation.
	gb2 := newGrantBooks(t, 6_000_000_000)
	gb2.grant(a, 1, 0, 10_000)
	gb2.grant(b, 1, 0, 10_000)
	gb2.ticket(a, 2, 0, 1)
	if rc := gb2.ticket(a, 3, 10_500, 1); rc.Status != protocol.StatusHeld || rc.Reason != protocol.ReasonGrantExceeded {
		t.Fatalf("a device past its grant, the account's rest reserved for another: %+v; want held", rc)
	}
	gs, _ := gb2.bk.Grants("home")
	for _, g := range gs {
		if g.Device == "plug-2" && g.Reserved != 3_000_000_000 {
			t.Fatalf("the other device's grant reserves %d after the overrun; want all of it, 3 EUR", g.Reserved)
		}
	}
	gb2.reconcile()
}

// TestGrantExpiryAndIdle: housekeeping releases a grant at its expiry
// and one idle for its timeout; a later ticket naming it is charged from
// what is available.
func TestGrantExpiryAndIdle(t *testing.T) {
	gb := newGrantBooks(t, 10_000_000_000)
	a, b := testPayer, testPayer
	b.Device = "plug-2"
	gb.grant(a, 1, 0, 1000)
	gb.grant(b, 1, 0, 1000)
	for i := 0; i < 9; i++ { // a keeps using its grant; b does not
		gb.now = gb.now.Add(50 * time.Second)
		gb.ticket(a, uint64(2+i), uint64(10*(i+1)), 1)
		if n, err := gb.bk.CloseGrants(gb.ctx, gb.terms, gb.now.UnixMilli()); err != nil || n != 0 && i != 1 || n != 1 && i == 1 {
			t.Fatalf("tick %d: closed %d, %v", i, n, err)
		}
	}
	gb.now = gb.now.Add(200 * time.Second) // past a's validity
	if n, _ := gb.bk.CloseGrants(gb.ctx, gb.terms, gb.now.UnixMilli()); n != 1 {
		t.Fatalf("at expiry: closed %d", n)
	}
	gs, _ := gb.bk.Grants("")
	for _, g := range gs {
		if want := map[string]metering.GrantState{"plug-1": metering.GrantExpired, "plug-2": metering.GrantIdle}[g.Device]; g.State != want || g.Reserved != 0 {
			t.Errorf("grant of %s: %v, reserves %d; want %v", g.Device, g.State, g.Reserved, want)
		}
	}
	if rc := gb.ticket(a, 20, 200, 1); rc.Status != protocol.StatusAccepted || rc.Charged != 33_000_000 {
		t.Fatalf("a ticket naming the expired grant: %+v", rc)
	}
	if r := gb.reconcile(); r.Reserved != 0 || r.Grants.Open != 0 {
		t.Fatalf("%+v", r)
	}
}

// TestGrantBounds: a grant is bounded by what the meter's plausible rate
// can count in the grant's validity, by MaxUnits and by the account's
// spending cap; a request the cap leaves nothing for is refused
// insufficient funds with spending_cap. An amount buys the units it pays.
func TestGrantBounds(t *testing.T) {
	gb := newGrantBooks(t, 100_000_000_000) // 100 EUR
	p := testPayer
	p.Rules = map[string]*metering.Rules{"energy_wh": {MaxRate: metering.Rate{Units: 22_000, Per: time.Hour}}} // a 22 kW charger
	rc, err := gb.grant(p, 1, 0, 1_000_000)
	if err != nil || rc.Grant.Limit != 3666 { // 22 kWh/h for the grant's 10 minutes
		t.Fatalf("a grant past the meter's rate: %+v, %v", rc.Grant, err)
	}
	gb.terms.Grants.MaxUnits = 500
	p2 := testPayer
	p2.Device = "plug-2"
	if rc, err := gb.grant(p2, 1, 0, 1_000_000); err != nil || rc.Grant.Limit != 500 {
		t.Fatalf("a grant past max_units: %+v, %v", rc.Grant, err)
	}
	gb.terms.Grants.MaxUnits = 0
	gb.terms.Caps = map[string]metering.Caps{"home": {Day: 1_500_000_000}} // 1.50 EUR a day, 1.2498 of it reserved already
	p3 := testPayer
	p3.Device = "plug-3"
	rc, err = gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		return gb.bk.Grant(tx, gb.terms, p3, &protocol.GrantRequest{Device: "plug-3", Request: 1, Meter: "energy_wh", Amount: 1_000_000_000})
	})
	if err != nil || rc.Grant.Reserved != 250_200_000 || rc.Grant.Limit != 834 {
		t.Fatalf("1 EUR's worth under a cap with 0.2502 EUR of room: %+v, %v; want 834 Wh", rc.Grant, err)
	}
	p4 := testPayer
	p4.Device = "plug-4"
	if _, err := gb.grant(p4, 1, 0, 10); !isRefusal(err, protocol.ReasonSpendingCap) {
		t.Fatalf("a grant the cap leaves no room for: %v; want spending_cap", err)
	}
	gb.reconcile()
}

// TestTicketNamingAnEarlierGrant: a ticket naming a grant its device had
// before the current one is charged like one under an ended grant; a
// grant it never had is refused grant_unknown.
func TestTicketNamingAnEarlierGrant(t *testing.T) {
	gb := newGrantBooks(t, 10_000_000_000)
	p := testPayer
	gb.grant(p, 1, 0, 1000)
	gb.ticket(p, 2, 0, 1)
	if _, err := gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		return gb.bk.ReleaseGrant(tx, gb.terms, p, &protocol.Release{Device: p.Device, Request: 3, Grant: 1, Register: 0})
	}); err != nil {
		t.Fatal(err)
	}
	gb.grant(p, 4, 0, 1000)
	if rc := gb.ticket(p, 5, 100, 1); rc.Status != protocol.StatusAccepted || rc.Charged != 100*300_000 {
		t.Fatalf("a ticket naming the earlier grant: %+v; want accepted, charged from the balance", rc)
	}
	tk := &protocol.Ticket{Device: p.Device, Seq: 6, Time: uint64(gb.now.UnixMilli()), Readings: []protocol.Reading{{Meter: "energy_wh", Register: 200}}, Grant: 99}
	_, err := gb.do(func(tx *store.Tx) (protocol.Receipt, error) {
		rc, _, err := gb.bk.Apply(tx, gb.terms, p, tk, []byte{6})
		return rc, err
	})
	if !isRefusal(err, protocol.ReasonGrantUnknown) {
		t.Fatalf("a ticket naming a grant never made: %v; want grant_unknown", err)
	}
	if r := gb.reconcile(); r.Reserved != 300_000_000 || r.Grants.Open != 1 {
		t.Fatalf("%+v", r)
	}
}
