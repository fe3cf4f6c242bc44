package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// farthingCLI runs the farthing binary against a data directory.
func farthingCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(built(t, "farthing", "../farthing"), args...).CombinedOutput()
	return string(out), err
}

// TestTopUpServesADeviceThatRanDry: a prepaid device runs its account dry
// over MQTT; `farthing account topup` through the operator socket refills
// it and the device is served again. A top-up whose daemon is killed
// with SIGKILL between request and answer, sent again with the same
// reference after the restart, is booked exactly once; the books
// reconcile (opening + top-ups − charges = balances).
func TestTopUpServesADeviceThatRanDry(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"kiosk-1@kiosk"}, "", "")
	d := startDaemon(t, bin, g.config, g.mqtt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "kiosk-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	// 0.60 EUR: a baseline and two kWh at 0.30, then the account is dry.
	for i := 0; i < 3; i++ {
		if r := dev.report(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("ticket %d: %+v", i, r)
		}
	}
	if r := dev.report(t); r.Status != protocol.StatusInsufficientFunds || r.Balance != 0 {
		t.Fatalf("ticket on a dry account: %+v; want insufficient funds, balance 0", r)
	}
	out, err := farthingCLI(t, "account", "topup", "kiosk", "1.00 EUR", "--ref", "pay-1", "--data", g.data)
	if err != nil || !strings.Contains(out, "topped up 1.00 EUR") || !strings.Contains(out, "balance 1.00 EUR") {
		t.Fatalf("farthing account topup: %v\n%q", err, out)
	}
	out, _ = farthingCLI(t, "account", "topup", "kiosk", "1.00 EUR", "--ref", "pay-1", "--data", g.data)
	if !strings.Contains(out, "already done") {
		t.Fatalf("the same reference again: %s", out)
	}
	out, err = farthingCLI(t, "account", "topup", "kiosk", "2.00 EUR", "--ref", "pay-1", "--data", g.data)
	if err == nil || !strings.Contains(out, "409") {
		t.Fatalf("the reference with another amount: %v %s; want a 409 refusal", err, out)
	}
	// The next ticket is served, and charges the kWh refused before too:
	// registers are cumulative, so the refused usage was not lost.
	if r := dev.report(t); r.Status != protocol.StatusAccepted || r.Charged != 600_000_000 || r.Balance != 400_000_000 {
		t.Fatalf("the first ticket after the top-up: %+v; want accepted, 0.60 charged, 0.40 left", r)
	}
	dev.Close()

	// device add asks the running gateway first: terms its configuration
	// would refuse are refused with one line, exit 2, nothing written.
	registry := filepath.Join(g.data, "devices.yaml")
	before, _ := os.ReadFile(registry)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--account", "nobody", "--provider", "utility", "--tariff", "energy_wh=energy"}, `account "nobody" is not configured`},
		{[]string{"--account", "kiosk", "--provider", "nobody", "--tariff", "energy_wh=energy"}, `provider "nobody" is not configured`},
		{[]string{"--account", "kiosk", "--provider", "utility", "--tariff", "energy_wh=nothing"}, `tariffs.energy_wh: `},
	} {
		args := append([]string{"device", "add", "--data", g.data, "--id", "ghost-1", "--type", "hmac"}, tc.args...)
		out, err := farthingCLI(t, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("device add %v: %v\n%s; want one line with %q, exit 2", tc.args, err, out, tc.want)
		}
	}
	if after, _ := os.ReadFile(registry); !bytes.Equal(before, after) {
		t.Fatal("a refused device add changed the device file")
	}
	if _, err := os.Stat(filepath.Join(g.data, "device-keys", "ghost-1.secret")); err == nil {
		t.Fatal("a refused device add wrote the device's secret")
	}
	if out, err := farthingCLI(t, "device", "add", "--data", g.data, "--id", "kiosk-2", "--type", "hmac", "--account", "kiosk",
		"--provider", "utility", "--tariff", "energy_wh=energy"); err != nil || strings.Contains(out, "no gateway runs") {
		t.Fatalf("device add with good terms: %v\n%s", err, out)
	}

	// SIGKILL between a top-up's request and its answer.
	c, err := net.Dial("unix", filepath.Join(g.data, "operator.sock"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"amount":"0.50 EUR","ref":"pay-2"}`
	c.Write([]byte("POST /accounts/kiosk/topups HTTP/1.1\r\nHost: farthingd\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	d.kill(t)
	c.Close()
	d = startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	out, err = farthingCLI(t, "account", "topup", "kiosk", "0.50 EUR", "--ref", "pay-2", "--data", g.data)
	if err != nil {
		t.Fatalf("top-up again after the kill: %v %s", err, out)
	}
	t.Logf("after SIGKILL, the same reference: %s", strings.TrimSpace(out))
	out, err = farthingCLI(t, "account", "entries", "kiosk", "--format", "json", "--data", g.data)
	if err != nil {
		t.Fatal(err, out)
	}
	var entries []metering.Entry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err, out)
	}
	refs := map[string]int{}
	for _, e := range entries {
		if e.Kind == metering.EntryTopUp {
			refs[e.Ref]++
		}
	}
	if refs["pay-1"] != 1 || refs["pay-2"] != 1 {
		t.Fatalf("top-up entries by reference %v; want pay-1 and pay-2 once each", refs)
	}
	rep := inspect(t, g.data)
	rc := rep.Reconcile
	if !rc.Balanced || rc.TopUps != 1_500_000_000 || rc.Opening+rc.TopUps-rc.LedgerCharged != rc.Balances {
		t.Fatalf("reconcile after top-ups: %+v", rc)
	}
	var log []ledger.Operation
	resp, err := operatorGet(g.data, "/audit")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&log)
	resp.Body.Close()
	if len(log) != 2 || log[0].Credential != "socket" {
		t.Fatalf("audit log %+v; want the two top-ups, by the socket", log)
	}

	// device disable and remove while the gateway runs: it reloads the
	// device file, closes the disabled device's open session (nothing
	// more is charged), and neither a disabled nor a removed device can
	// connect; a removed one's secrets on the gateway are deleted.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	dev, err = dialDevice(ctx, g, "kiosk-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	change := func(verb string) {
		t.Helper()
		reloads := strings.Count(g.logText(), "msg=reloaded")
		if out, err := farthingCLI(t, "device", verb, "--id", "kiosk-1", "--data", g.data); err != nil {
			t.Fatalf("device %s: %v %s", verb, err, out)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(g.logText(), "msg=reloaded") == reloads; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the gateway did not reload after device %s:\n%s", verb, g.logText())
			}
		}
	}
	charged := inspect(t, g.data).Reconcile.LedgerCharged
	change("disable")
	// Its open session is closed with the reload, and it cannot come back.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(g.logText(),
		`msg="device session closed: the device was revoked, disabled or removed" device=kiosk-1`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the disabled device's session was not closed:\n%s", g.logText())
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if again, err := dialDevice(ctx, g, "kiosk-1"); err == nil {
		again.Close()
		t.Error("a disabled device connected")
	}
	cancel()
	if after := inspect(t, g.data).Reconcile.LedgerCharged; after != charged {
		t.Fatalf("a disabled device was charged: %d then %d", charged, after)
	}
	change("remove")
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if again, err := dialDevice(ctx, g, "kiosk-1"); err == nil {
		again.Close()
		t.Error("a removed device connected")
	}
	cancel()
	secret := filepath.Join(g.data, "device-keys", "kiosk-2.secret") // added with device add above
	if _, err := os.Stat(secret); err != nil {
		t.Fatal(err)
	}
	if out, err := farthingCLI(t, "device", "remove", "--id", "kiosk-2", "--data", g.data); err != nil {
		t.Fatal(err, out)
	}
	if _, err := os.Stat(secret); err == nil {
		t.Error("device remove left the device's secret on the gateway")
	}
}

// TestSpendingCapsOverMQTT: an account's daily cap and a device's daily
// cap each stop a charge with "insufficient funds" and the reason
// spending_cap, which a device tells from an empty account; nothing is
// charged, and the other device of the account is served until the
// account's cap.
func TestSpendingCapsOverMQTT(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-a@capped", "meter-b@capped"}, "",
		"")
	// The capped account: 1.00 EUR a day in Berlin; meter-b alone 0.40 a day.
	b, _ := os.ReadFile(g.config)
	cfg := strings.Replace(string(b), "providers:", `  - {id: capped, kind: postpaid, currency: EUR, credit_limit: "100", daily_cap: "1.00", timezone: Europe/Berlin}
providers:`, 1)
	os.WriteFile(g.config, []byte(cfg), 0o600)
	devs, _ := os.ReadFile(filepath.Join(g.data, "devices.yaml"))
	devs = []byte(strings.Replace(string(devs), "id: meter-b\n", "id: meter-b\n      daily_cap: \"0.40\"\n", 1))
	os.WriteFile(filepath.Join(g.data, "devices.yaml"), devs, 0o600)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	dial := func(id string) *testDevice {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dev, err := dialDevice(ctx, g, id)
		if err != nil {
			t.Fatalf("%s: %v\n%s", id, err, g.logText())
		}
		return dev
	}
	a, bdev := dial("meter-a"), dial("meter-b")
	defer a.Close()
	defer bdev.Close()
	a.report(t) // baselines
	bdev.report(t)
	if r := bdev.report(t); r.Status != protocol.StatusAccepted || r.Charged != 300_000_000 {
		t.Fatalf("meter-b's first kWh: %+v", r)
	}
	if r := bdev.report(t); r.Status != protocol.StatusInsufficientFunds || r.Reason != protocol.ReasonSpendingCap || r.Charged != 0 {
		t.Fatalf("meter-b past its 0.40 daily cap: %+v; want insufficient funds, spending_cap", r)
	}
	// meter-a goes on until the account's 1.00: 0.30 spent by meter-b, so
	// two more kWh (0.90) and the third (1.20) is over.
	for i := 0; i < 2; i++ {
		if r := a.report(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("meter-a kWh %d: %+v", i, r)
		}
	}
	if r := a.report(t); r.Status != protocol.StatusInsufficientFunds || r.Reason != protocol.ReasonSpendingCap {
		t.Fatalf("meter-a past the account's 1.00 daily cap: %+v", r)
	}
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced || rep.Reconcile.LedgerCharged != 900_000_000 {
		t.Fatalf("after the caps: %+v; want 0.90 EUR charged, balanced", rep.Reconcile)
	}
}

// TestVoucherServesADeviceThatRanDry: a voucher issued with `farthing
// voucher issue` and redeemed with `farthing voucher redeem` through the
// real daemon refills a prepaid account that ran dry, and the device is
// served again over MQTT. Replayed, forged, tampered, expired,
// wrong-currency and wrong-account vouchers are refused with their own
// reasons and change nothing.
func TestVoucherServesADeviceThatRanDry(t *testing.T) {
	bin := buildDaemon(t)
	keys := t.TempDir()
	issuerPub, _ := makeGatewayKey(t, keys) // an Ed25519 key pair: the issuer's
	forgerDir := t.TempDir()
	makeGatewayKey(t, forgerDir)
	forgerKey := filepath.Join(forgerDir, "gateway.key")
	g := newGatewayDir(t, []string{"kiosk-1@kiosk"}, "", "voucher_issuers: ["+issuerPub+"]\n")
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "kiosk-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for i := 0; i < 3; i++ {
		dev.report(t)
	}
	if r := dev.report(t); r.Status != protocol.StatusInsufficientFunds {
		t.Fatalf("dry: %+v", r)
	}
	issue := func(key string, args ...string) string {
		t.Helper()
		out, err := farthingCLI(t, append([]string{"voucher", "issue", "--key", key}, args...)...)
		if err != nil {
			t.Fatalf("voucher issue: %v %s", err, out)
		}
		return strings.TrimSpace(out)
	}
	issuerKey := filepath.Join(keys, "gateway.key")
	v1 := issue(issuerKey, "--id", "V-0001", "--account", "kiosk", "--amount", "1.00 EUR", "--expires", "24h")
	out, err := farthingCLI(t, "voucher", "redeem", v1, "--data", g.data)
	if err != nil || !strings.Contains(out, "redeemed 1.00 EUR") {
		t.Fatalf("redeem: %v %s", err, out)
	}
	if r := dev.report(t); r.Status != protocol.StatusAccepted || r.Charged != 600_000_000 {
		t.Fatalf("the device after the voucher: %+v", r)
	}
	if out, err := farthingCLI(t, "voucher", "issue", "--key", issuerKey, "--id", "V-OLD", "--account", "kiosk", "--amount", "1.00 EUR",
		"--expires", "2020-01-01T00:00:00Z"); err == nil || !strings.Contains(out, "2020-01-01T00:00:00Z is in the past") {
		t.Errorf("a voucher issued already expired: %v %s", err, out)
	}
	expiring := issue(issuerKey, "--id", "V-0003", "--account", "kiosk", "--amount", "1.00 EUR", "--expires", "1s")
	time.Sleep(1100 * time.Millisecond)
	for _, tc := range []struct{ name, text, want string }{
		{"replay", v1, "voucher_redeemed"},
		{"forged", issue(forgerKey, "--id", "V-0002", "--account", "kiosk", "--amount", "9.00 EUR", "--expires", "24h"), "voucher_forged"},
		{"tampered", tamper(v1), ""},
		{"expired", expiring, "voucher_expired"},
		{"expired, said in RFC 3339", expiring, "expired at 20"},
		{"bound to another gateway", issue(issuerKey, "--id", "V-0006", "--account", "kiosk", "--amount", "1.00 EUR", "--expires", "24h",
			"--gateway", "gw-elsewhere"), "voucher_other_gateway"},
		{"bound to a device, redeemed by an operator", issue(issuerKey, "--id", "V-0007", "--account", "kiosk", "--amount", "1.00 EUR",
			"--expires", "24h", "--device", "kiosk-1"), "voucher_other_device"},
		{"wrong currency", issue(issuerKey, "--id", "V-0004", "--account", "kiosk", "--amount", "1.00 USD", "--expires", "24h"), "voucher_wrong_currency"},
		{"wrong account", issue(issuerKey, "--id", "V-0005", "--account", "nobody", "--amount", "1.00 EUR", "--expires", "24h"), "voucher_wrong_account"},
	} {
		out, err := farthingCLI(t, "voucher", "redeem", tc.text, "--data", g.data)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s voucher: %v %s; want a refusal naming %q", tc.name, err, out, tc.want)
		}
	}
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced || rep.Reconcile.TopUps != 1_000_000_000 {
		t.Fatalf("after one good voucher and nine bad ones: %+v; want 1.00 EUR of top-ups", rep.Reconcile)
	}
}

// tamper changes one character in the middle of a voucher's text.
func tamper(text string) string {
	b := []byte(text)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
