package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/provider"
)

// TestDoubleRedemptionReversedByAnAdjustment: a voucher redeemed at two
// gateways (each alone had to accept it offline) is flagged by the
// provider's receivers — one on its file, one on PostgreSQL — with its
// amount. The second gateway's operator reverses it with `farthing
// account adjust … --voucher` (a signed, audited debit, idempotent by its
// reference); it goes upstream as a credit record of kind adjustment, and
// both receivers show the double redemption resolved by it, and the
// gateway's books still reconcile.
func TestDoubleRedemptionReversedByAnAdjustment(t *testing.T) {
	t.Parallel() // waits on timers mostly: it runs beside the others of its kind
	bin := buildDaemon(t)
	keys := t.TempDir()
	issuerPub, _ := makeGatewayKey(t, keys)
	boltAddr, pgAddr := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	var gws []*gatewayDir
	var pubs []string
	for range 2 {
		g := newGatewayDir(t, nil, "", fmt.Sprintf(`voucher_issuers: [%s]
upstreams:
  - {name: books, type: http, url: "http://%s/aggregates"}
  - {name: bookspg, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, issuerPub, boltAddr, pgAddr))
		pub, _ := makeGatewayKey(t, g.data)
		gws, pubs = append(gws, g), append(pubs, pub)
	}
	recv := startReceiverAt(t, boltAddr, pubs...)
	db, err := postgres(t).NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recvPG := startReceiverOn(t, pgAddr, []string{"--db", db}, pubs...)
	for _, g := range gws {
		d := startDaemon(t, bin, g.config, g.mqtt)
		defer d.stop(t)
	}
	v, err := farthingCLI(t, "voucher", "issue", "--key", filepath.Join(keys, "gateway.key"), "--id", "V-TWICE", "--account", "kiosk",
		"--amount", "0.50 EUR", "--expires", "24h")
	if err != nil {
		t.Fatalf("voucher issue: %v %s", err, v)
	}
	for _, g := range gws {
		if out, err := farthingCLI(t, "voucher", "redeem", strings.TrimSpace(v), "--data", g.data); err != nil {
			t.Fatalf("each gateway alone accepts the voucher: %v %s", err, out)
		}
	}
	waitReport(t, []*receiverProc{recv, recvPG}, func(rep *provider.Report) bool {
		return len(rep.Doubles) == 1 && rep.Doubles[0].Amount == 500_000_000 && rep.Doubles[0].Account == "kiosk" && rep.Doubles[0].Resolved == nil
	})

	g := gws[1]
	adjust := []string{"account", "adjust", "kiosk", "-0.50 EUR", "--ref", "fix-V-TWICE", "--reason", "double_redemption",
		"--voucher", "V-TWICE", "--note", "redeemed at two sites on 2026-12-07", "--data", g.data}
	out, err := farthingCLI(t, adjust...)
	if err != nil || !strings.Contains(out, "adjusted by -0.50 EUR (double_redemption)") || !strings.Contains(out, "balance 0.60 EUR") {
		t.Fatalf("account adjust: %v\n%s", err, out)
	}
	if out, err := farthingCLI(t, adjust...); err != nil || !strings.Contains(out, "already done") {
		t.Fatalf("the same adjustment again: %v\n%s", err, out)
	}
	conflict := append(append([]string(nil), adjust[:3]...), append([]string{"-0.40 EUR"}, adjust[4:]...)...)
	if out, err := farthingCLI(t, conflict...); err == nil || !strings.Contains(out, "reference already used") {
		t.Fatalf("another amount under the same reference: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--reason", ""}, {"--ref", ""}} {
		args := append(append([]string(nil), adjust...), bad...)
		if out, err := farthingCLI(t, args...); err == nil {
			t.Errorf("adjust with %v accepted: %s", bad, out)
		}
	}
	resp, err := operatorGet(g.data, "/audit")
	if err != nil {
		t.Fatal(err)
	}
	var ops []ledger.Operation
	json.NewDecoder(resp.Body).Decode(&ops)
	resp.Body.Close()
	if n := len(ops); n == 0 || ops[n-1].Kind != "adjustment" || ops[n-1].Amount != -500_000_000 || ops[n-1].Reason != "double_redemption" ||
		ops[n-1].Voucher != "V-TWICE" || !strings.Contains(ops[n-1].Note, "two sites") || ops[n-1].Credential != "socket" {
		t.Errorf("audit log %+v; want the adjustment with its reason, note, voucher and credential last", ops)
	}
	if rep := inspect(t, g.data); !rep.Reconcile.Balanced || rep.Reconcile.Adjustments != -500_000_000 {
		t.Errorf("the gateway's books after the adjustment: %+v", rep.Reconcile)
	}
	waitReport(t, []*receiverProc{recv, recvPG}, func(rep *provider.Report) bool {
		if len(rep.Doubles) != 1 || rep.Doubles[0].Resolved == nil {
			return false
		}
		r := rep.Doubles[0].Resolved
		var debits uint64
		for _, c := range rep.Credits {
			if c.Kind == "adjustment_debit" {
				debits += c.Amount
			}
		}
		return r.Amount == -500_000_000 && r.Reason == "double_redemption" && debits == 500_000_000
	})
	if out := recv.stop(t); !strings.Contains(out, "RESOLVED by adjustment") {
		t.Errorf("the receiver's report does not show the double redemption resolved:\n%s", out)
	}
}

// startReceiverOn is startReceiverAt with more arguments (--db URL, say).
func startReceiverOn(t *testing.T, addr string, extra []string, trust ...string) *receiverProc {
	t.Helper()
	r := &receiverProc{addr: addr, token: "test-read-token-0123456789"}
	tokenFile := filepath.Join(t.TempDir(), "read.token")
	os.WriteFile(tokenFile, []byte(r.token+"\n"), 0o600)
	args := append([]string{"receive", "--http", addr, "--read-token-file", tokenFile, "--data", t.TempDir(), "--every", "1h"}, extra...)
	for _, f := range trust {
		args = append(args, "--trust", f)
	}
	r.cmd = exec.Command(built(t, "farthing", "../farthing"), args...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	if !listening(addr, 10*time.Second) {
		t.Fatalf("farthing receive did not listen: %s", r.out.String())
	}
	return r
}

// waitReport waits until every receiver's report satisfies ok.
func waitReport(t *testing.T, rs []*receiverProc, ok func(*provider.Report) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range rs {
		for {
			rep := r.report(t)
			if ok(rep) {
				break
			}
			if time.Now().After(deadline) {
				b, _ := json.Marshal(rep)
				t.Fatalf("receiver %s: %s", r.addr, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
