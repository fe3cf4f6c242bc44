package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/provider"
)

func TestDeviceAddListAndInspect(t *testing.T) {
	data := t.TempDir()
	out := mustRun(t, nil, "device", "add", "--data", data, "--config", offlineConfig(t, data), "--count", "3", "--prefix", "plug-", "--type", "ed25519",
		"--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy")
	if !strings.Contains(out, "added 3 device(s)") {
		t.Fatalf("device add printed %q", out)
	}
	mustRun(t, nil, "device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "kiosk-1", "--type", "hmac", "--account", "kiosk", "--provider", "utility", "--tariff", "water_ml=water")
	for _, f := range []string{"plug-0001.key", "plug-0001.secret", "kiosk-1.secret"} {
		fi, err := os.Stat(filepath.Join(data, "device-keys", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(filepath.Join(data, "devices.yaml")); fi.Mode().Perm() != 0o600 {
		t.Errorf("devices.yaml mode %v; want 0600 (it holds secrets)", fi.Mode().Perm())
	}
	rf, err := registry.ReadFile(filepath.Join(data, "devices.yaml"))
	if err != nil || len(rf.Devices) != 4 || rf.Devices[0].PublicKey == "" || rf.Devices[3].KeyType != "hmac" {
		t.Fatalf("registry after adds: %+v, %v", rf, err)
	}
	cred := mustRun(t, nil, "device", "credentials", "--data", data, "--id", "kiosk-1")
	if !strings.Contains(cred, "dtls psk identity: kiosk-1") || !strings.Contains(cred, "mqtt password: ") {
		t.Errorf("device credentials:\n%s", cred)
	}
	list := mustRun(t, nil, "device", "list", "--data", data)
	if !strings.Contains(list, "plug-0003") || !strings.Contains(list, "water_ml=water") {
		t.Errorf("device list:\n%s", list)
	}
	// The Ed25519 devices' public keys, as a provider's receiver reads them
	// (--device-keys): the HMAC device has none to give.
	pubs := mustRun(t, nil, "device", "list", "--data", data, "--public-keys")
	keysFile := filepath.Join(t.TempDir(), "device-keys")
	if err := os.WriteFile(keysFile, []byte(pubs), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := provider.ReadDeviceKeys(keysFile)
	if err != nil || len(keys) != 3 || hex.EncodeToString(keys["plug-0001"]) != rf.Devices[0].PublicKey || strings.Contains(pubs, "kiosk-1") {
		t.Fatalf("device list --public-keys:\n%s\nread back: %v, %v", pubs, keys, err)
	}
	if code, _, errOut := farthing(t, nil, "device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "kiosk-1", "--type", "hmac", "--account", "a", "--provider", "p", "--tariff", "m=t"); code != exitBad || !strings.Contains(errOut, "already registered") {
		t.Errorf("adding a device twice: exit %d %q", code, errOut)
	}
	if code, _, errOut := farthing(t, nil, "device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "x"); code != exitBad || !strings.Contains(errOut, "--account") {
		t.Errorf("device add without account: exit %d %q", code, errOut)
	}
	// With no gateway running, the terms are checked against its
	// configuration files, and refused with nothing written if they do
	// not fit; without the files, nothing can be checked or added.
	before, _ := os.ReadFile(filepath.Join(data, "devices.yaml"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", offlineConfig(t, data), "--account", "nosuch", "--provider", "utility", "--tariff", "energy_wh=energy"}, `account "nosuch" is not configured`},
		{[]string{"--config", offlineConfig(t, data), "--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=gas"}, `tariff "gas" is not in the tariff file`},
		{[]string{"--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy"}, "give its configuration file with --config"},
	} {
		code, _, errOut := farthing(t, nil, append([]string{"device", "add", "--data", data, "--id", "plug-9"}, tc.args...)...)
		if code == 0 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "nothing written") {
			t.Errorf("offline device add %v: exit %d %q; want %q, nothing written", tc.args, code, errOut, tc.want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(data, "devices.yaml")); !bytes.Equal(before, after) {
		t.Error("a refused offline device add changed the device file")
	}
	// inspect with no daemon and no state file.
	if code, _, errOut := farthing(t, nil, "inspect", "--data", data); code != exitBad || !strings.Contains(errOut, "no state file") {
		t.Errorf("inspect without state: exit %d %q", code, errOut)
	}
}

// TestInspectReadsTheStateFile: with the daemon stopped, inspect opens the
// state file read-only.
func TestInspectReadsTheStateFile(t *testing.T) {
	data := t.TempDir()
	cfg, err := gateway.LoadConfigWithDataDir("", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DTLS.Listen = "off"
	g, err := gateway.New(cfg, nil)
	if err == nil {
		g.Store().Close()
	}
	out := mustRun(t, nil, "inspect", "--data", data)
	var rep ledger.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Reconcile.Balanced {
		t.Fatalf("inspect output %q: %v", out, err)
	}
}

// TestInspectAndProofAskTheRunningDaemon: while farthingd runs, inspect
// and proof go through its operator socket (the state file is the
// daemon's); over TCP they need TLS and the token.
func TestInspectAndProofAskTheRunningDaemon(t *testing.T) {
	data := t.TempDir()
	runGateway(t, data, func(cfg *gateway.Config) { cfg.GatewayID = "gw-live" })
	out := mustRun(t, nil, "inspect", "--data", data)
	var rep ledger.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Gateway != "gw-live" {
		t.Fatalf("inspect through the socket: %q: %v (a report read from the file has no gateway id)", out, err)
	}
	code, _, errOut := farthing(t, nil, "proof", "--data", data, "--ticket", "nobody/1")
	if code != exitBad || !strings.Contains(errOut, "404") {
		t.Fatalf("proof of an unknown ticket through the socket: exit %d %q; want the daemon's 404", code, errOut)
	}
	if code, _, errOut := farthing(t, nil, "inspect", "--data", data, "--operator", "http://127.0.0.1:1"); code != exitBad || !strings.Contains(errOut, "https") {
		t.Fatalf("inspect --operator over plain HTTP: exit %d %q", code, errOut)
	}
}

// A device that made its own Ed25519 key is registered by its public key:
// no private key is written on the gateway, the same key cannot be
// registered twice, a private key file is refused, and a key made on the
// gateway says so.
func TestDeviceAddWithItsOwnKey(t *testing.T) {
	data, dev := t.TempDir(), t.TempDir()
	mustRun(t, nil, "keygen", "--type", "ed25519", "--out", dev) // on the device
	terms := []string{"--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy"}
	code, out, errOut := farthing(t, nil, append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "own-1", "--pub", filepath.Join(dev, "device.pub")}, terms...)...)
	if code != 0 || !strings.Contains(out, "added 1 device(s)") || !strings.Contains(errOut, "no gateway runs") || strings.Contains(errOut, "made here") {
		t.Fatalf("device add --pub: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(data, "device-keys", "own-1.key")); err == nil {
		t.Error("a private key was written for a device that made its own")
	}
	k, err := os.ReadFile(filepath.Join(dev, "device.pub"))
	if err != nil {
		t.Fatal(err)
	}
	rf, _ := registry.ReadFile(filepath.Join(data, "devices.yaml"))
	if len(rf.Devices) != 1 || rf.Devices[0].KeyType != "ed25519" || rf.Devices[0].PublicKey == "" {
		t.Fatalf("registry: %+v", rf.Devices)
	}
	if pub, err := readPublicKey(filepath.Join(dev, "device.pub")); err != nil || rf.Devices[0].PublicKey != hex.EncodeToString(pub) {
		t.Fatalf("registered key %s, the device's %x (%v; file %q)", rf.Devices[0].PublicKey, pub, err, k)
	}
	before, _ := os.ReadFile(filepath.Join(data, "devices.yaml"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--id", "own-2", "--pub", rf.Devices[0].PublicKey}, "same key id"},
		{[]string{"--id", "own-3", "--pub", filepath.Join(dev, "device.key")}, "a private key stays on the device"},
		{[]string{"--count", "2", "--pub", rf.Devices[0].PublicKey}, "--id"},
	} {
		code, _, errOut := farthing(t, nil, append(append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data)}, tc.args...), terms...)...)
		if code != exitBad || !strings.Contains(errOut, tc.want) {
			t.Errorf("device add %v: exit %d %q; want %q", tc.args, code, errOut, tc.want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(data, "devices.yaml")); !bytes.Equal(before, after) {
		t.Error("a refused device add changed the device file")
	}
	if _, err := os.Stat(filepath.Join(data, "device-keys", "own-2.secret")); err == nil {
		t.Error("a refused device add wrote a secret")
	}
	_, _, errOut = farthing(t, nil, append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "lab-1", "--type", "ed25519"}, terms...)...)
	if !strings.Contains(errOut, "private keys were made here") {
		t.Errorf("a key made on the gateway went unsaid: %q", errOut)
	}
}

// TestDeviceRotateAndRevoke: rotate gives an hmac device a next secret (a
// 0600 file for its firmware) and an ed25519 device the public key it made;
// --commit makes the next key the key and revokes the old one; revoke marks
// the device and its key ids; a revoked key cannot be added again.
func TestDeviceRotateAndRevoke(t *testing.T) {
	data, dev := t.TempDir(), t.TempDir()
	terms := []string{"--account", "fleet", "--provider", "utility", "--tariff", "energy_wh=energy"}
	mustRun(t, nil, append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "plug-1", "--type", "hmac"}, terms...)...)
	mustRun(t, nil, "keygen", "--type", "ed25519", "--out", dev)
	mustRun(t, nil, append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "evse-1", "--pub", filepath.Join(dev, "device.pub")}, terms...)...)
	reg := filepath.Join(data, "devices.yaml")
	read := func() *registry.File {
		rf, err := registry.ReadFile(reg)
		if err != nil {
			t.Fatal(err)
		}
		return rf
	}
	oldKID, _, _ := registry.KeyIDs(read().Devices[0])

	out := mustRun(t, nil, "device", "rotate", "--id", "plug-1", "--data", data, "--overlap", "1h")
	next := filepath.Join(data, "device-keys", "plug-1.next.secret")
	if fi, err := os.Stat(next); err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(out, "rotating to key") {
		t.Fatalf("rotate hmac: %v %v\n%s", fi, err, out)
	}
	if code, _, errOut := farthing(t, nil, "device", "rotate", "--id", "plug-1", "--data", data); code != exitBad || !strings.Contains(errOut, "already rotating") {
		t.Errorf("a second rotation: exit %d %q", code, errOut)
	}
	if code, _, errOut := farthing(t, nil, "device", "rotate", "--id", "evse-1", "--data", data); code != exitBad || !strings.Contains(errOut, "--pub") {
		t.Errorf("ed25519 rotate without --pub: exit %d %q", code, errOut)
	}
	dev2 := t.TempDir()
	mustRun(t, nil, "keygen", "--type", "ed25519", "--out", dev2)
	mustRun(t, nil, "device", "rotate", "--id", "evse-1", "--pub", filepath.Join(dev2, "device.pub"), "--data", data)
	if list := mustRun(t, nil, "device", "list", "--data", data); strings.Count(list, "rotating until") != 2 {
		t.Errorf("device list:\n%s", list)
	}
	rf := read()
	if _, err := registry.Build(reg, rf, anyTerms{}); err != nil {
		t.Fatalf("the registry with two rotations does not build: %v", err)
	}
	_, nextKID, _ := registry.KeyIDs(rf.Devices[0])

	mustRun(t, nil, "device", "rotate", "--id", "plug-1", "--commit", "--data", data)
	rf = read()
	cur, _, _ := registry.KeyIDs(rf.Devices[0])
	if rf.Devices[0].Next != nil || cur != *nextKID || !slices.Contains(rf.RevokedKeys, hex.EncodeToString(oldKID[:])) {
		t.Fatalf("after commit: %+v, revoked %v", rf.Devices[0], rf.RevokedKeys)
	}
	if _, err := os.Stat(next); err == nil {
		t.Error("the next secret file is still there after the commit")
	}

	mustRun(t, nil, "device", "revoke", "--id", "evse-1", "--data", data)
	rf = read()
	evCur, evNext, _ := registry.KeyIDs(rf.Devices[1])
	if !rf.Devices[1].Revoked || !slices.Contains(rf.RevokedKeys, hex.EncodeToString(evCur[:])) || !slices.Contains(rf.RevokedKeys, hex.EncodeToString(evNext[:])) {
		t.Fatalf("after revoke: %+v, revoked %v", rf.Devices[1], rf.RevokedKeys)
	}
	mustRun(t, nil, "device", "remove", "--id", "evse-1", "--data", data)
	code, _, errOut := farthing(t, nil, append([]string{"device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "evse-2", "--pub", filepath.Join(dev, "device.pub")}, terms...)...)
	if code != exitBad || !strings.Contains(errOut, "was revoked") {
		t.Errorf("adding a revoked key: exit %d %q", code, errOut)
	}
}

// TestDeviceRules: a device's meter gets rules of its own through the CLI
// (never by editing the file that holds its secret), bad rules are refused
// with nothing written, and --set "" gives the meter back its tariff's.
func TestDeviceRules(t *testing.T) {
	data := t.TempDir()
	mustRun(t, nil, "device", "add", "--data", data, "--config", offlineConfig(t, data), "--id", "evse-1", "--type", "hmac", "--account", "fleet",
		"--provider", "utility", "--tariff", "energy_wh=energy")
	mustRun(t, nil, "device", "rules", "--id", "evse-1", "--meter", "energy_wh", "--set", "max_jump: 50000, max_rate: 22000/h", "--data", data)
	rf, _ := registry.ReadFile(filepath.Join(data, "devices.yaml"))
	r := rf.Devices[0].Plausibility["energy_wh"]
	if r == nil || r.MaxJump != 50000 || r.MaxRate.Units != 22000 || r.MaxRate.Per != time.Hour {
		t.Fatalf("rules %+v", r)
	}
	before, _ := os.ReadFile(filepath.Join(data, "devices.yaml"))
	for _, bad := range [][]string{{"--meter", "water_l", "--set", "max_jump: 1"}, {"--meter", "energy_wh", "--set", "max_rate: fast"}} {
		if code, _, _ := farthing(t, nil, append([]string{"device", "rules", "--id", "evse-1", "--data", data}, bad...)...); code != exitBad {
			t.Errorf("rules %v: exit %d", bad, code)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(data, "devices.yaml")); !bytes.Equal(before, after) {
		t.Error("refused rules changed the device file")
	}
	mustRun(t, nil, "device", "rules", "--id", "evse-1", "--meter", "energy_wh", "--set", "", "--data", data)
	if rf, _ := registry.ReadFile(filepath.Join(data, "devices.yaml")); rf.Devices[0].Plausibility != nil {
		t.Errorf("rules not cleared: %+v", rf.Devices[0].Plausibility)
	}
}

// offlineConfig writes, once per data directory, the configuration of a
// gateway that is not running there (accounts fleet and kiosk in EUR,
// provider utility, tariffs energy and water) and returns its path: what
// an offline device add checks the terms against.
func offlineConfig(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(data, "farthingd.yaml")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	config := "data_dir: " + data + `
accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "1000"}
  - {id: kiosk, kind: prepaid, currency: EUR, balance: "10"}
providers:
  - {id: utility, window: 1m}
`
	tariffs := `tariffs:
  - {id: energy, currency: EUR, price: 0.30, per: 1000}
  - {id: water, currency: EUR, price: 0.002, per: 1000}
`
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "tariffs.yaml"), []byte(tariffs), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
