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
