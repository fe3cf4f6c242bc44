package main

import (
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// payoutProviders is how many providers the payouts test's receiver holds
// wallets for: enough that `payouts run` takes a while to commit them all.
const payoutProviders = 200

// fillReceiver books two aggregates of 0.75 EUR for each of n providers
// into a receiver file in dir, and writes a payouts file for them.
func fillReceiver(t *testing.T, dir string, n int) (policy string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, err := protocol.NewEd25519Signer(priv)
	if err != nil {
		t.Fatal(err)
	}
	r, err := provider.Open(filepath.Join(dir, "receiver.db"), provider.Keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	var yaml strings.Builder
	yaml.WriteString("payouts:\n")
	seq := uint64(0)
	for i := range n {
		prov := fmt.Sprintf("p%03d", i)
		fmt.Fprintf(&yaml, "  - {provider: %s, threshold: \"1.00 EUR\", platform_fee_bps: 250, payees: [{id: creator, weight: 70}, {id: publisher, weight: 30}]}\n", prov)
		for range 2 {
			seq++
			a := protocol.Aggregate{Gateway: "gw-1", Seq: seq, Epoch: 1, Provider: prov, Account: "a", Meter: "m",
				WindowStart: 1, WindowEnd: 2, Quantity: 1, Amount: 750_000_000, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
			var enc protocol.Encoder
			b, err := enc.AppendAggregate(nil, &a, s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Accept(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	policy = filepath.Join(dir, "payouts.yaml")
	if err := os.WriteFile(policy, []byte(yaml.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return policy
}

// payoutsIn reads the payouts a receiver's file holds.
func payoutsIn(t *testing.T, dir string) []provider.Payout {
	t.Helper()
	r, err := provider.Open(filepath.Join(dir, "receiver.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ps, err := r.Payouts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// `farthing payouts run` killed with SIGKILL part-way through, then run
// again, pays every provider exactly once and loses no nano; list and
// report then show it in CSV, JSON and the reconciliation, and the
// accounts' statement what they were charged.
func TestPayoutsRunSurvivesSIGKILL(t *testing.T) {
	src := t.TempDir()
	policy := fillReceiver(t, src, payoutProviders)
	orig, err := os.ReadFile(filepath.Join(src, "receiver.db"))
	if err != nil {
		t.Fatal(err)
	}
	var dir string
	midway := false
	// The kill lands at a time; try later ones until it lands part-way.
	for _, delay := range []time.Duration{20, 50, 100, 200, 400, 800} {
		dir = t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "receiver.db"), orig, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "payouts", "run", "--policy", policy, "--data", dir)
		cmd.Env = append(os.Environ(), "FARTHING_TEST_AS_CLI=1")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		made := len(payoutsIn(t, dir))
		t.Logf("killed after %v: %d of %d payouts made", delay*time.Millisecond, made, payoutProviders)
		if made > 0 && made < payoutProviders {
			midway = true
			break
		}
	}
	if !midway {
		t.Log("no kill landed part-way through the run; checking the rerun after the last one")
	}
	t.Setenv("FARTHING_TEST_AS_CLI", "") // the reruns run in this process
	mustRun(t, nil, "payouts", "run", "--policy", policy, "--data", dir)
	if out := mustRun(t, nil, "payouts", "run", "--policy", policy, "--data", dir); strings.Count(out, "\n") > 1 {
		t.Fatalf("a third run paid again:\n%s", out)
	}
	ps := payoutsIn(t, dir)
	seen := map[string]bool{}
	var paid, fees, carried metering.Nanos
	for _, p := range ps {
		if seen[p.Provider] || p.Number != 1 || p.Count != 2 {
			t.Fatalf("provider %s paid twice or wrongly: %+v", p.Provider, p)
		}
		seen[p.Provider] = true
		fees += p.Fee
		carried += p.CarryOut
		for _, s := range p.Payees {
			paid += s.Amount
		}
	}
	received := metering.Nanos(payoutProviders * 2 * 750_000_000)
	if len(seen) != payoutProviders || paid+fees+carried != received {
		t.Fatalf("%d providers paid; paid %d + fees %d + carried %d != received %d", len(seen), paid, fees, carried, received)
	}
	// 1.50 EUR: a 2.5% fee of 0.0375, then 1.46 of 1.4625 split 70/30 in
	// cents: 102.375 and 43.875, so 102 and 44 (the extra cent to the larger
	// remainder); 0.0025 carried.
	want := map[string]int64{"creator": 102, "publisher": 44}
	for _, s := range ps[0].Payees {
		if s.Minor != want[s.ID] {
			t.Errorf("payee %s got %d cents, want %d", s.ID, s.Minor, want[s.ID])
		}
	}

	rows, err := csv.NewReader(strings.NewReader(mustRun(t, nil, "payouts", "list", "--format", "csv", "--data", dir))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+2*payoutProviders || rows[0][0] != "PROVIDER" {
		t.Fatalf("csv: %d rows, header %v", len(rows), rows[0])
	}
	var listed []provider.Payout
	if err := json.Unmarshal([]byte(mustRun(t, nil, "payouts", "list", "--format", "json", "--data", dir)), &listed); err != nil || len(listed) != payoutProviders {
		t.Fatalf("json: %d payouts (%v)", len(listed), err)
	}
	stmt, err := csv.NewReader(strings.NewReader(mustRun(t, nil, "payouts", "statement", "--from", "1970-01-01",
		"--to", "1970-01-02", "--format", "csv", "--data", dir))).ReadAll()
	if err != nil || len(stmt) != 1+payoutProviders || stmt[1][0] != "a" || stmt[1][3] != "unsplit" || stmt[1][6] != "150" || stmt[1][7] != "1500000000" {
		t.Fatalf("statement (%v): %d rows, first %v", err, len(stmt), stmt[min(1, len(stmt)-1)])
	}
	report := mustRun(t, nil, "payouts", "report", "--data", dir)
	if strings.Count(report, "TRUE") != payoutProviders || strings.Contains(report, "FALSE") {
		t.Fatalf("report not balanced:\n%s", report)
	}
	report = mustRun(t, nil, "receive", "report", "--data", dir)
	if strings.Count(report, ": BALANCED") != payoutProviders || strings.Contains(report, "NOT BALANCED") {
		t.Fatalf("receive report not balanced:\n%s", report)
	}
}

// TestPayoutsRecomputedFromExports: three providers paid in EUR, JPY and
// BHD, twice each, so that the second payout carries money in. Everything
// a payout says is recomputed here from its CSV and JSON exports, with
// this test's own table of minor units: the gross is the carry in plus
// the aggregates it lists, the 2.5 % fee is taken on the new money only,
// each payee is paid whole minor units, the rest is carried into the next
// payout; the reports print each currency in its minor-unit digits; and
// `receive report` on the stopped receiver counts what its books hold.
func TestPayoutsRecomputedFromExports(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	amounts := map[uint64]uint64{} // aggregate seq → nanos
	seq := uint64(0)
	book := func(prov, cur string, nanos ...uint64) {
		r, err := provider.Open(filepath.Join(dir, "receiver.db"), provider.Keys(pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, n := range nanos {
			seq++
			amounts[seq] = n
			a := protocol.Aggregate{Gateway: "gw-1", Seq: seq, Epoch: 1, Provider: prov, Account: "a", Meter: "m",
				WindowStart: 1, WindowEnd: 2, Quantity: 1, Amount: n, Currency: cur, Tickets: 1, MerkleRoot: make([]byte, 32)}
			var enc protocol.Encoder
			b, err := enc.AppendAggregate(nil, &a, s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Accept(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	policy := filepath.Join(dir, "payouts.yaml")
	os.WriteFile(policy, []byte(`payouts:
  - {provider: eu, threshold: "1.00 EUR", platform_fee_bps: 250, payees: [{id: creator, weight: 70}, {id: publisher, weight: 30}]}
  - {provider: jp, threshold: "100 JPY", platform_fee_bps: 250, payees: [{id: creator, weight: 70}, {id: publisher, weight: 30}]}
  - {provider: bh, threshold: "1.000 BHD", platform_fee_bps: 250, payees: [{id: creator, weight: 70}, {id: publisher, weight: 30}]}
`), 0o600)
	for range 2 {
		book("eu", "EUR", 1_234_567_891, 987_654_321)
		book("jp", "JPY", 413_987_654_321)
		book("bh", "BHD", 1_234_567_891)
		mustRun(t, nil, "payouts", "run", "--policy", policy, "--data", dir)
	}
	var listed []provider.Payout
	if err := json.Unmarshal([]byte(mustRun(t, nil, "payouts", "list", "--format", "json", "--data", dir)), &listed); err != nil || len(listed) != 6 {
		t.Fatalf("json: %d payouts (%v)", len(listed), err)
	}
	digits := map[string]int{"EUR": 2, "JPY": 0, "BHD": 3} // ISO 4217
	carry := map[string]int64{}
	for _, p := range listed {
		unit := int64(1)
		for range 9 - digits[p.Currency] {
			unit *= 10
		}
		fresh := int64(0)
		for _, run := range p.Aggregates {
			_, span, _ := strings.Cut(run, "/")
			lo, hi, ok := strings.Cut(span, "-")
			if !ok {
				hi = lo
			}
			var from, to uint64
			fmt.Sscan(lo, &from)
			fmt.Sscan(hi, &to)
			for q := from; q <= to; q++ {
				fresh += int64(amounts[q])
			}
		}
		if int64(p.CarryIn) != carry[p.Provider] || int64(p.Gross) != fresh+carry[p.Provider] {
			t.Errorf("%s #%d: carry in %d, gross %d; want %d and %d", p.Provider, p.Number, p.CarryIn, p.Gross, carry[p.Provider], fresh+carry[p.Provider])
		}
		if fee := fresh * 250 / 10000; int64(p.Fee) != fee {
			t.Errorf("%s #%d: fee %d; want %d, 2.5 %% of the new money %d only", p.Provider, p.Number, p.Fee, fee, fresh)
		}
		paid := int64(0)
		for _, s := range p.Payees {
			if int64(s.Amount) != s.Minor*unit {
				t.Errorf("%s #%d %s: %d nanos is not %d minor units of %s", p.Provider, p.Number, s.ID, s.Amount, s.Minor, p.Currency)
			}
			paid += int64(s.Amount)
		}
		net := int64(p.Gross) - int64(p.Fee)
		if paid != net/unit*unit || int64(p.CarryOut) != net-paid {
			t.Errorf("%s #%d: paid %d, carried %d of a net %d", p.Provider, p.Number, paid, p.CarryOut, net)
		}
		carry[p.Provider] = int64(p.CarryOut)
	}
	// The CSV says the same, row by row.
	rows, err := csv.NewReader(strings.NewReader(mustRun(t, nil, "payouts", "list", "--format", "csv", "--data", dir))).ReadAll()
	if err != nil || len(rows) != 1+2*len(listed) {
		t.Fatalf("csv: %d rows, %v", len(rows), err)
	}
	for i, p := range listed {
		for j, s := range p.Payees {
			r := rows[1+2*i+j]
			want := []string{p.Provider, fmt.Sprint(p.Number), p.Currency, fmt.Sprint(p.Gross), fmt.Sprint(p.Fee), s.ID,
				fmt.Sprint(s.Minor), fmt.Sprint(s.Amount), fmt.Sprint(p.CarryOut)}
			got := []string{r[0], r[1], r[3], r[4], r[5], r[6], r[7], r[8], r[9]}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("csv row %d: %v; want %v", 1+2*i+j, got, want)
			}
		}
	}
	report := mustRun(t, nil, "payouts", "report", "--data", dir)
	for _, bad := range []string{".00 JPY", "0.00 BHD "} {
		if strings.Contains(report, bad) {
			t.Errorf("payouts report prints %q:\n%s", bad, report)
		}
	}
	if !strings.Contains(report, " JPY") || !strings.Contains(report, ".000") {
		t.Errorf("payouts report:\n%s", report)
	}
	if rep := mustRun(t, nil, "receive", "report", "--data", dir); !strings.Contains(rep, "booked 8 aggregates in 1 streams") {
		t.Errorf("receive report of the stopped receiver:\n%s", rep)
	}
}
