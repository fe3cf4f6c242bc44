package provider_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the schedule test's zone, wherever it runs

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

func (g gw) aggFor(t *testing.T, id, prov, cur string, epoch, seq, amount uint64) []byte {
	t.Helper()
	a := protocol.Aggregate{Gateway: id, Seq: seq, Epoch: epoch, Provider: prov, Account: "a", Meter: "m",
		WindowStart: 1, WindowEnd: 2, Quantity: 1, Amount: amount, Currency: cur, Tickets: 1, MerkleRoot: make([]byte, 32)}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, g.s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Property: for random streams of aggregates from two gateways to three
// providers in EUR, JPY and BHD, and random policies, every nano received
// is paid to a payee, kept as a fee, carried or pending — after every run,
// and a run repeated at once pays nothing.
func TestPayoutsLoseNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 20; round++ {
		stores(t, func(t *testing.T, open opener) {
			a, b := newGW(t), newGW(t)
			rc, err := open(provider.Keys(a.pub, b.pub))
			if err != nil {
				t.Fatal(err)
			}
			provs := map[string]string{"stadtwerk": "EUR", "telco": "JPY", "souq": "BHD"}
			policies := map[string]provider.PayoutPolicy{}
			for p, cur := range provs {
				pol := provider.PayoutPolicy{Provider: p, Threshold: fmt.Sprintf("%d %s", 1+r.IntN(20), cur),
					FeeBasisPoints: uint32(r.IntN(2000)), Payees: []provider.PayeeWeight{{ID: "creator", Weight: uint64(1 + r.IntN(100))}}}
				if r.IntN(2) == 0 {
					pol.Payees = append(pol.Payees, provider.PayeeWeight{ID: "publisher", Weight: uint64(1 + r.IntN(100))})
				}
				if r.IntN(2) == 0 {
					pol.FeeFixed = fmt.Sprintf("0.%d %s", r.IntN(10), cur)
				}
				if r.IntN(3) == 0 {
					pol.FeeCap = fmt.Sprintf("%d %s", 1+r.IntN(3), cur)
				}
				policies[p] = pol
			}
			seqs := map[*gw]uint64{&a: 0, &b: 0}
			names := []string{"stadtwerk", "telco", "souq"}
			for batch := 0; batch < 10; batch++ {
				for i := 0; i < 1+r.IntN(30); i++ {
					g := &a
					if r.IntN(2) == 0 {
						g = &b
					}
					seqs[g]++
					p := names[r.IntN(3)]
					if _, err := rc.Accept(context.Background(), g.aggFor(t, fmt.Sprintf("gw-%p", g), p, provs[p], 1, seqs[g], uint64(r.Int64N(3_000_000_000)+1))); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := rc.RunPayouts(context.Background(), policies, time.Now()); err != nil {
					t.Fatal(err)
				}
				again, err := rc.RunPayouts(context.Background(), policies, time.Now())
				if err != nil || len(again) != 0 {
					t.Fatalf("a second run at once paid %d payouts, %v", len(again), err)
				}
				ws, _ := rc.Wallets(context.Background())
				for _, w := range ws {
					if !w.Balanced {
						t.Fatalf("round %d batch %d: %+v", round, batch, w)
					}
				}
			}
			ps, _ := rc.Payouts(context.Background())
			seen := map[string]bool{}
			for _, p := range ps {
				var sum metering.Nanos
				for _, s := range p.Payees {
					sum += s.Amount
				}
				if p.Fee+sum+p.CarryOut != p.Gross {
					t.Fatalf("payout %+v does not add up", p)
				}
				for _, k := range expand(t, p.Aggregates) {
					if seen[k] {
						t.Fatalf("aggregate %s paid twice", k)
					}
					seen[k] = true
				}
			}
			rc.Close()
		})
	}
}

// The payouts file: a threshold derived from the rail's fee, the platform
// fee, the payees.
func TestReadPayoutPolicies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "payouts.yaml")
	os.WriteFile(path, []byte(`payouts:
  - provider: stadtwerk
    threshold: "1.00 EUR"
    rail_fee: "0.25 EUR"
    rail_fee_bps: 0
    rail_fee_max_bps: 200
    platform_fee_bps: 500
    platform_fee_fixed: "0.10 EUR"
    platform_fee_cap: "5.00 EUR"
    payees:
      - {id: creator, weight: 70}
      - {id: publisher, weight: 30}
`), 0o600)
	ps, err := provider.ReadPayoutPolicies(path)
	if err != nil || len(ps) != 1 || ps["stadtwerk"].FeeBasisPoints != 500 {
		t.Fatalf("%+v, %v", ps, err)
	}
	a := newGW(t)
	rc, _ := provider.Open(filepath.Join(t.TempDir(), "r.db"), provider.Keys(a.pub))
	defer rc.Close()
	// 0.25 EUR is under 2% of 12.50 EUR: below that nothing is paid.
	rc.Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, 1, 12_000_000_000))
	if made, _ := rc.RunPayouts(context.Background(), ps, time.Now()); len(made) != 0 {
		t.Fatalf("paid 12.00 EUR below the derived 12.50 threshold: %+v", made)
	}
	rc.Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, 2, 1_000_000_001))
	made, err := rc.RunPayouts(context.Background(), ps, time.Now())
	if err != nil || len(made) != 1 {
		t.Fatalf("payout of 13.000000001 EUR: %+v, %v", made, err)
	}
	if st := rc.Stats(); st.Payouts != 1 || st.PayoutFailures != 0 {
		t.Fatalf("stats after one payout: %d made, %d failed runs", st.Payouts, st.PayoutFailures)
	}
	p := made[0]
	// fee 5% of 13.000000001 + 0.10 = 0.750000000 (rounded down) = 0.75; net 12.250000001:
	// 12.25 paid, 70/30 = 8.575 → 8.58 (largest remainder) and 3.675 → 3.67; 0.000000001 carried.
	if p.Fee != 750_000_000 || p.Payees[0].Minor+p.Payees[1].Minor != 1225 || p.CarryOut != 1 || p.Count != 2 ||
		len(p.Aggregates) != 1 || !strings.HasSuffix(p.Aggregates[0], "/1-2") {
		t.Fatalf("payout %+v", p)
	}
}

// A stream that misses an aggregate holds the provider's payouts until
// the gap closes (on_gap: wait), then one payout covers everything; with
// on_gap: pay, what arrived is paid and the gap is recorded.
func TestPayoutsWaitForGaps(t *testing.T) {
	for _, onGap := range []string{"wait", "pay"} {
		stores(t, func(t *testing.T, open opener) {
			a := newGW(t)
			rc, err := open(provider.Keys(a.pub))
			if err != nil {
				t.Fatal(err)
			}
			pol := map[string]provider.PayoutPolicy{"stadtwerk": {Provider: "stadtwerk", Threshold: "1.00 EUR", OnGap: onGap,
				Payees: []provider.PayeeWeight{{ID: "p", Weight: 1}}}}
			rc.Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, 1, 2_000_000_000))
			second := a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, 2, 3_000_000_000) // dropped on the way
			rc.Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, 3, 4_000_000_000))
			made, err := rc.RunPayouts(context.Background(), pol, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			switch onGap {
			case "wait":
				if len(made) != 0 {
					t.Fatalf("paid across a gap: %+v", made)
				}
			case "pay":
				if len(made) != 1 || len(made[0].Gaps) != 1 || made[0].Gross != 6_000_000_000 {
					t.Fatalf("on_gap pay: %+v; want 6.00 EUR paid, the gap recorded", made)
				}
			}
			rc.Accept(context.Background(), second) // the gap closes
			made, _ = rc.RunPayouts(context.Background(), pol, time.Now())
			var total metering.Nanos
			ps, _ := rc.Payouts(context.Background())
			for _, p := range ps {
				total += p.Gross
			}
			if len(made) != 1 || total != 9_000_000_000 {
				t.Fatalf("%s: after the gap closed: made %+v, all payouts %d; want 9.00 EUR paid in all", onGap, made, total)
			}
			ws, _ := rc.Wallets(context.Background())
			if !ws[0].Balanced || ws[0].Pending != 0 {
				t.Fatalf("%s: wallet %+v", onGap, ws[0])
			}
			rc.Close()
		})
	}
}

// expand turns a payout's runs ("STREAM/FROM-TO") into one key per
// aggregate.
func expand(t *testing.T, runs []string) []string {
	var out []string
	for _, r := range runs {
		stream, seqs, _ := strings.Cut(r, "/")
		from, to, ok := strings.Cut(seqs, "-")
		if !ok {
			to = from
		}
		f, err1 := strconv.ParseUint(from, 10, 64)
		l, err2 := strconv.ParseUint(to, 10, 64)
		if err1 != nil || err2 != nil || l < f {
			t.Fatalf("bad run %q", r)
		}
		for s := f; s <= l; s++ {
			out = append(out, fmt.Sprintf("%s/%d", stream, s))
		}
	}
	return out
}

// A daily schedule pays once a day at its time in its zone, catches up
// after downtime, and with "threshold" also pays as soon as it can.
func TestPayoutSchedule(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	at := func(day, hour, min int) time.Time { return time.Date(2026, 3, day, hour, min, 0, 0, paris) }
	for _, tc := range []struct {
		schedule string
		want     []bool // a payout at each check below
	}{
		{"daily 02:00 Europe/Paris", []bool{true, false, false, true, false}},
		{"daily 02:00 Europe/Paris, threshold", []bool{true, true, false, true, false}},
		{"", []bool{true, true, false, true, false}},
	} {
		stores(t, func(t *testing.T, open opener) {
			a := newGW(t)
			rc, err := open(provider.Keys(a.pub))
			if err != nil {
				t.Fatal(err)
			}
			pol := map[string]provider.PayoutPolicy{"stadtwerk": {Provider: "stadtwerk", Threshold: "1.00 EUR",
				Schedule: tc.schedule, Payees: []provider.PayeeWeight{{ID: "p", Weight: 1}}}}
			seq := uint64(0)
			check := func(i int, now time.Time, fill bool) {
				t.Helper()
				if fill {
					seq++
					rc.Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, seq, 2_000_000_000))
				}
				made, err := rc.RunDuePayouts(context.Background(), pol, now)
				if err != nil {
					t.Fatal(err)
				}
				if got := len(made) == 1; got != tc.want[i] {
					t.Fatalf("%q check %d at %s: paid %v, want %v", tc.schedule, i, now, got, tc.want[i])
				}
			}
			check(0, at(10, 9, 0), true)   // first sight: catches up on this morning's 02:00
			check(1, at(10, 23, 0), true)  // the same day again
			check(2, at(11, 1, 59), false) // nothing new, and before 02:00
			rc.Close()
			if rc, err = open(provider.Keys(a.pub)); err != nil { // a restart keeps the day's mark
				t.Fatal(err)
			}
			if !tc.want[1] {
				// The wallet still holds the day-10 aggregate: it goes at day 11's 02:00.
				check(3, at(11, 2, 0), false)
			} else {
				check(3, at(11, 2, 0), true)
			}
			check(4, at(11, 2, 30), false)
			rc.Close()
		})
	}
	if _, err := provider.ReadPayoutPolicies(writeFile(t, "payouts:\n- provider: x\n  threshold: 1.00 EUR\n  schedule: daily 25:00\n  payees: [{id: p, weight: 1}]\n")); err == nil {
		t.Fatal("a daily time of 25:00 was accepted")
	}
}

func writeFile(t *testing.T, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "payouts.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The providers' page's payouts file is one the receiver takes.
func TestReadmePayoutsFile(t *testing.T) {
	b, err := os.ReadFile("../docs/providers.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\npayouts:\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatal("docs/providers.md has no payouts file")
	}
	ps, err := provider.ReadPayoutPolicies(writeFile(t, "payouts:\n"+block))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ps["stadtwerk"]; !ok || len(p.Payees) != 2 || p.Schedule == "" {
		t.Fatalf("README payouts file read as %+v", ps)
	}
}

// Two receivers on one database run payouts at the same moment: the
// payout lock lets one make the payout; the other finds the wallet paid.
func TestPostgresPayoutRunsTakeALock(t *testing.T) {
	a := newGW(t)
	url, err := cluster.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rs []*provider.Receiver
	for range 2 {
		r, err := pgbooks.Open(context.Background(), url, provider.Keys(a.pub), pgbooks.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rs = append(rs, r)
	}
	for seq := uint64(1); seq <= 50; seq++ {
		if _, err := rs[seq%2].Accept(context.Background(), a.aggFor(t, "gw-a", "stadtwerk", "EUR", 1, seq, 1_000_000_000)); err != nil {
			t.Fatal(err)
		}
	}
	pol := map[string]provider.PayoutPolicy{"stadtwerk": {Provider: "stadtwerk", Threshold: "1.00 EUR",
		Payees: []provider.PayeeWeight{{ID: "p", Weight: 1}}}}
	var wg sync.WaitGroup
	made := make([][]provider.Payout, 2)
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if made[i], err = r.RunPayouts(context.Background(), pol, time.Now()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if len(made[0])+len(made[1]) != 1 {
		t.Fatalf("payouts made: %d and %d; want exactly one", len(made[0]), len(made[1]))
	}
	ws, err := rs[0].Wallets(context.Background())
	if err != nil || len(ws) != 1 || !ws[0].Balanced || ws[0].Pending != 0 || ws[0].Received != 50_000_000_000 || ws[0].Payouts != 1 {
		t.Fatalf("wallets %+v, %v", ws, err)
	}
}
