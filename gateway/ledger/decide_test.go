package ledger

import (
	"errors"
	"testing"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

func testTerms(t *testing.T, balance metering.Nanos) *Terms {
	t.Helper()
	ts, err := metering.ParseTariffs("test", []byte("tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.30 EUR, per: 1000}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return &Terms{GatewayID: "gw-test", Tariffs: ts,
		Policies: map[string]metering.Policy{"utility": {Length: 3_600_000}},
		Accounts: map[string]metering.Account{"home": {ID: "home", Kind: metering.Prepaid, Currency: "EUR", Balance: balance}}}
}

var testPayer = Payer{Device: "plug-1", Account: "home", Provider: "utility", Tariffs: map[string]string{"energy_wh": "energy"}}

func ticket(seq, reg uint64) *protocol.Ticket {
	return &protocol.Ticket{Device: "plug-1", Seq: seq, Time: 1_790_000_000_000 + seq*1000,
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}
}

// decide is the money logic of accepting a ticket, without a state file:
// a baseline charges nothing, the next reading is priced and debited, a
// repeat or an older seq changes nothing, a register that goes back is
// held, and a balance too small is refused.
func TestDecideWithoutAStateFile(t *testing.T) {
	terms := testTerms(t, 1_000_000_000) // 1 EUR prepaid
	st := ticketState{account: terms.Accounts["home"]}

	st.meters = make([]meterState, 1)
	eff, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(1, 1000), raw: []byte("t1"), now: 1})
	if err != nil || !eff.accepted || eff.receipt.Charged != 0 || eff.entry != nil || len(eff.leaves) != 0 {
		t.Fatalf("baseline: %+v, %v; want accepted, nothing charged", eff.receipt, err)
	}
	st.device = eff.device

	eff, err = decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(2, 3000), raw: []byte("t2"), now: 2})
	if err != nil || eff.receipt.Charged != 600_000_000 || eff.entry == nil || eff.entry.Amount != -600_000_000 {
		t.Fatalf("2 kWh at 0.30: %+v, entry %+v, %v", eff.receipt, eff.entry, err)
	}
	if eff.receipt.Balance != 400_000_000 || eff.account.Balance != 400_000_000 || len(eff.leaves) != 1 || eff.device.LastSeq != 2 {
		t.Fatalf("after the charge: receipt %+v, account %+v, %d leaves", eff.receipt, eff.account, len(eff.leaves))
	}
	if st.device.LastSeq != 1 {
		t.Fatal("decide changed the state it was given")
	}
	st.device, st.account = eff.device, eff.account
	st.meters = []meterState{{charge: eff.changed[0].charge, window: eff.changed[0].window}}

	stored := eff.ticket
	st.stored = &stored
	dup, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(2, 3000), raw: []byte("t2"), now: 3})
	if err != nil || dup.accepted || dup.receipt.Status != protocol.StatusDuplicate || dup.receipt.Charged != 600_000_000 {
		t.Fatalf("repeat: %+v, %v; want duplicate with the original charge", dup.receipt, err)
	}
	st.stored = nil
	old, _ := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(1, 1000), raw: []byte("t1"), now: 3})
	if old.accepted || old.receipt.Reason != protocol.ReasonSuperseded {
		t.Fatalf("older seq: %+v; want duplicate, superseded", old.receipt)
	}

	var rf *Refusal
	back, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(3, 2000), raw: nil, now: 4})
	if err != nil || back.receipt.Status != protocol.StatusHeld || back.receipt.Reason != protocol.ReasonRegisterBackwards ||
		back.entry != nil || back.hold == nil || back.hold.Usage[0].Usage.Quantity != 2000 || back.device.meter("energy_wh").Register != 2000 {
		t.Fatalf("register backwards: %+v, %+v, %v; want held, 2000 units as from a restarted meter", back.receipt, back.hold, err)
	}
	jump := *terms.Tariffs.Get("energy")
	jump.Rules.MaxJump = 5000
	p := testPayer
	p.Rules = map[string]*metering.Rules{"energy_wh": &jump.Rules}
	held, err := decide(&ticketInput{st: st, t: terms, p: p, tk: ticket(3, 9000), raw: nil, now: 4})
	if err != nil || held.receipt.Status != protocol.StatusHeld || held.receipt.Reason != protocol.ReasonRegisterJump || held.receipt.Charged != 0 {
		t.Fatalf("a device's own rule: %+v, %v; want held, register_jump", held.receipt, err)
	}
	if _, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(3, 10_000), raw: nil, now: 4}); !errors.As(err, &rf) || rf.Status != protocol.StatusInsufficientFunds {
		t.Fatalf("7 kWh on 0.40 EUR prepaid: %v; want insufficient funds", err)
	}
	// The refusal carries what the account had available, as read in the
	// transaction that refused it: the receipt needs no read after it.
	if !rf.HasAvailable || rf.Available != int64(st.account.Balance) {
		t.Fatalf("insufficient funds: available %d (%v); want the prepaid balance %d", rf.Available, rf.HasAvailable, st.account.Balance)
	}
}

// The free allowance belongs to the account and meter: two devices of one
// account draw on one allowance, and usage inside it is never charged the
// tariff's minimum.
func TestFreeAllowanceIsTheAccounts(t *testing.T) {
	ts, err := metering.ParseTariffs("test", []byte("tariffs:\n  - {id: energy, currency: EUR, period: day, timezone: UTC, free: 500, min_charge: 0.05 EUR, price: 0.30 EUR, per: 1000}\n"))
	if err != nil {
		t.Fatal(err)
	}
	terms := testTerms(t, 1_000_000_000)
	terms.Tariffs = ts
	a, b := testPayer, testPayer
	b.Device = "plug-2"
	tk := func(dev string, seq, reg uint64) *protocol.Ticket {
		t := ticket(seq, reg)
		t.Device = dev
		return t
	}
	// The books between tickets: one account, one (account, meter) pricing
	// state, one device state per device.
	account := terms.Accounts["home"]
	var charge metering.ChargeState
	devices := map[string]deviceState{}
	send := func(p Payer, seq, reg uint64) protocol.Receipt {
		t.Helper()
		st := ticketState{device: devices[p.Device], account: account, meters: []meterState{{charge: charge}}}
		eff, err := decide(&ticketInput{st: st, t: terms, p: p, tk: tk(p.Device, seq, reg), raw: nil, now: int64(seq)})
		if err != nil {
			t.Fatal(err)
		}
		account, devices[p.Device] = eff.account, eff.device
		if len(eff.changed) > 0 {
			charge = eff.changed[0].charge
		}
		return eff.receipt
	}
	send(a, 1, 1000) // baselines
	send(b, 1, 1000)
	if r := send(a, 2, 1400); r.Charged != 0 {
		t.Fatalf("400 Wh inside the 500 Wh allowance: %+v; want nothing charged, not the minimum", r)
	}
	// plug-2's 300 Wh: the account's remaining 100 Wh are free, 200 Wh are
	// charged at 0.30/kWh = 0.06 EUR (above the 0.05 minimum).
	if r := send(b, 2, 1300); r.Charged != 60_000_000 {
		t.Fatalf("plug-2's 300 Wh after plug-1 used 400 of the account's 500 free: %+v; want 0.06 EUR", r)
	}
}

// A window keeps its charges by price band, and its aggregate lists them:
// across a tier edge, inside the free allowance, with a minimum top-up —
// the bands add up to the aggregate's quantity and amount.
func TestAggregateBands(t *testing.T) {
	ts, err := metering.ParseTariffs("test", []byte(`tariffs:
  - id: energy
    currency: EUR
    period: month
    timezone: UTC
    free: 100
    min_charge: 0.05 EUR
    tiers:
      - {up_to: 1100, price: 0.40 EUR, per: 1000}
      - {price: 0.30 EUR, per: 1000}
`))
	if err != nil {
		t.Fatal(err)
	}
	terms := testTerms(t, 100_000_000_000)
	terms.Tariffs = ts
	st := ticketState{account: terms.Accounts["home"], meters: make([]meterState, 1)}
	var window metering.WindowState
	for i, reg := range []uint64{1000, 1150, 1160, 3150} { // baseline; 100 free + 50; 10 (minimum); 1990 across the edge
		st.meters[0].window = window
		eff, err := decide(&ticketInput{st: st, t: terms, p: testPayer, tk: ticket(uint64(i+1), reg), raw: []byte{byte(i)}, now: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		st.device, st.account = eff.device, eff.account
		if len(eff.changed) > 0 {
			st.meters[0].charge, window = eff.changed[0].charge, eff.changed[0].window
		}
	}
	_, sealed := terms.Policies["utility"].Close(window, 1_800_000_000_000)
	if sealed == nil {
		t.Fatal("the window did not seal")
	}
	a := sealedRecord{Provider: "utility", Account: "home", Meter: "energy_wh", Sealed: *sealed}.Aggregate("gw-test", 1)
	if err := a.Validate(); err != nil {
		t.Fatalf("aggregate %+v: %v", a, err)
	}
	// 100 Wh free; 50 Wh at 0.40 = 0.02, topped up to 0.05 (0.03 minimum);
	// 10 Wh at 0.40 = 0.004, topped up (0.046 minimum); then 940 Wh at 0.40
	// to the 1,100 Wh edge = 0.376 and 1,050 Wh at 0.30 = 0.315.
	want := []protocol.AggregateBand{
		{Band: "free", Quantity: 100},
		{Band: "minimum", Amount: 76_000_000},
		{Band: "tier 1", Quantity: 1000, Amount: 400_000_000},
		{Band: "tier 2", Quantity: 1050, Amount: 315_000_000},
	}
	if len(a.Bands) != len(want) {
		t.Fatalf("bands %+v, want %+v", a.Bands, want)
	}
	for i := range want {
		if a.Bands[i] != want[i] {
			t.Errorf("band %d: %+v, want %+v (all: %+v)", i, a.Bands[i], want[i], a.Bands)
		}
	}
	// The sealed record keeps its bands through the state file's encoding.
	rec, err := decodeSealedRecord(sealedRecord{Provider: "utility", Account: "home", Meter: "energy_wh", Sealed: *sealed}.encode())
	if err != nil || len(rec.Bands) != len(sealed.Bands) {
		t.Fatalf("sealed record round trip: %+v, %v", rec.Bands, err)
	}
}

// More bands than the wire carries, or a name it cannot carry, fold into
// "unsplit": the aggregate keeps the largest, and the sums hold.
func TestWireBandsFold(t *testing.T) {
	var bands []metering.BandPart
	var q uint64
	var amt metering.Nanos
	for i := range 10 {
		b := metering.BandPart{Band: "tier " + string(rune('a'+i)), Quantity: uint64(i + 1), Amount: metering.Nanos(100 * (i + 1))}
		if i == 9 {
			b.Band = "window nuit-\u00e9t\u00e9" // not printable ASCII, and the largest
		}
		bands, q, amt = append(bands, b), q+b.Quantity, amt+b.Amount
	}
	bands, _ = metering.MergeBands(nil, bands)
	a := protocol.Aggregate{Gateway: "gw", Seq: 1, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2,
		Quantity: q, Amount: uint64(amt), Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32),
		Bands: wireBands(bands, q, amt)}
	if err := a.Validate(); err != nil || len(a.Bands) != protocol.MaxAggregateBands {
		t.Fatalf("folded bands %+v: %v", a.Bands, err)
	}
	// Kept: tiers i..c (the seven largest with printable names); folded:
	// tiers b and a and the window: 2+1+10 Wh, 200+100+1000 nanos.
	if u := a.Bands[len(a.Bands)-1]; u.Band != metering.BandUnsplit || u.Quantity != 13 || u.Amount != 1300 {
		t.Fatalf("unsplit %+v; want 13 Wh, 1300 nanos (all: %+v)", u, a.Bands)
	}
}
