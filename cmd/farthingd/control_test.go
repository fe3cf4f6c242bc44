package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// fleetRig is a provider's receiver with its control channel and the
// gateways of one fleet group, each a real farthingd.
type fleetRig struct {
	t                    *testing.T
	bin                  string
	recv                 *receiverProc
	fleetAddr, token     string
	ctlPub, issuerKey    string
	nats                 string
	mosquitto            *mosquittoProc
	gws                  map[string]*gatewayDir
	daemons              map[string]*daemon
	issuerPub, pollToken string
	root                 string // the fleet's device root
}

// mosquittoProc is a Mosquitto broker that keeps nothing on disk: a
// restart loses every session.
type mosquittoProc struct {
	addr, conf, bin string
	cmd             *exec.Cmd
}

func (m *mosquittoProc) start(t *testing.T) {
	t.Helper()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !listening(m.addr, 10*time.Second) {
		t.Fatal("mosquitto did not start")
	}
}

func (m *mosquittoProc) kill() {
	m.cmd.Process.Kill()
	m.cmd.Wait()
}

// startMosquittoProc runs a Mosquitto broker on a free port for the
// control channel over MQTT.
func startMosquittoProc(t *testing.T) *mosquittoProc {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Fatal("mosquitto is not installed; scripts/test.sh installs it")
	}
	addr := freeAddr(t, "tcp")
	host, port, _ := strings.Cut(addr, ":")
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence false\n", port, host)), 0o600)
	m := &mosquittoProc{addr: addr, conf: conf, bin: bin}
	m.start(t)
	t.Cleanup(m.kill)
	return m
}

// gatewayConfig is a fleet gateway's configuration: aggregates and
// acknowledgements to the receiver over HTTP, commands over control.
func (f *fleetRig) addGateway(id, control string) *gatewayDir {
	g := newGatewayDir(f.t, []string{"plug-" + id}, "", fmt.Sprintf(`gateway_id: %s
voucher_issuers: [%s]
upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
control:
  trust: [%s]
  groups: [berlin]
  device_root: %s
%s
`, id, f.issuerPub, f.recv.addr, f.ctlPub, f.root, control))
	f.gws[id] = g
	return g
}

func (f *fleetRig) start(id string, env ...string) {
	g := f.gws[id]
	cmd := exec.Command(f.bin, "--config", g.config)
	cmd.Env = append(os.Environ(), env...)
	f.daemons[id] = startDaemonCmd(f.t, cmd, g.config, g.mqtt)
}

// push pushes a command through the receiver's fleet API.
func (f *fleetRig) push(c protocol.Command) protocol.Command {
	f.t.Helper()
	b, _ := json.Marshal(c)
	req, _ := http.NewRequest("POST", "http://"+f.fleetAddr+"/fleet/commands", strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out protocol.Command
	if resp.StatusCode != 200 {
		f.t.Fatalf("push %s: %s", c.Action, resp.Status)
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

// status reads the fleet's status with `farthing fleet status`.
func (f *fleetRig) status() provider.FleetStatus {
	f.t.Helper()
	tf := filepath.Join(f.t.TempDir(), "fleet.token")
	os.WriteFile(tf, []byte(f.token), 0o600)
	out, err := farthingCLI(f.t, "fleet", "status", "--receiver", "http://"+f.fleetAddr, "--token-file", tf, "--format", "json")
	if err != nil {
		f.t.Fatalf("fleet status: %v %s", err, out)
	}
	var st provider.FleetStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		f.t.Fatalf("fleet status: %v %s", err, out)
	}
	return st
}

// waitStatus waits until the fleet's status satisfies ok.
func (f *fleetRig) waitStatus(what string, ok func(provider.FleetStatus) bool) provider.FleetStatus {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := f.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", " ")
			f.t.Fatalf("%s: not within 30s: %s\nreceiver: %s", what, b, f.recv.out.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func commandOf(st provider.FleetStatus, id string) provider.CommandStatus {
	for _, c := range st.Commands {
		if c.ID == id {
			return c
		}
	}
	return provider.CommandStatus{}
}

const newTariffs = "tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.50 EUR, per: 1000}\n"

// TestControlChannelAcrossAFleet runs one receiver with the provider's
// control key and five gateways of the group berlin: three follow the
// commands over NATS JetStream, one over MQTT (Mosquitto), one by HTTP
// long polling. A tariff version with a future effective time is applied
// by all of them, and tickets on both sides of the boundary are priced by
// the right version to the nano; a gateway offline during two pushes
// catches up in order; a forged and an expired command are refused and
// reported; a gateway killed with SIGKILL between applying an adjustment
// and acknowledging it applies it once and acknowledges it once; a
// voucher revoked fleet-wide is refused at the gateway that had been
// offline; a command published while the MQTT gateway was away and its
// broker lost its session reaches it when the receiver publishes it
// again; and a tariff changed by hand is reported as a local change.
func TestControlChannelAcrossAFleet(t *testing.T) {
	f := &fleetRig{t: t, bin: buildDaemon(t), gws: map[string]*gatewayDir{}, daemons: map[string]*daemon{},
		token: "fleet-token-0123456789abcdef", pollToken: "poll-token-0123456789abcdef"}
	keys := t.TempDir()
	f.ctlPub, _ = makeGatewayKey(t, keys) // the provider's control key
	ctlKey := filepath.Join(keys, "gateway.key")
	issuerDir := t.TempDir()
	f.issuerPub, _ = makeGatewayKey(t, issuerDir)
	f.issuerKey = filepath.Join(issuerDir, "gateway.key")
	_, portStr, _ := net.SplitHostPort(freeAddr(t, "tcp"))
	port, _ := strconv.Atoi(portStr)
	nj := &natsJS{port: port, dir: t.TempDir()}
	nj.start(t)
	defer nj.kill()
	f.nats = fmt.Sprintf("nats://127.0.0.1:%d", nj.port)
	f.mosquitto = startMosquittoProc(t)
	root, _ := keyfile.GenerateMaster()
	rootPEM, _ := root.EncodePrivate()
	f.root = filepath.Join(keys, "device-root.key")
	keyfile.WriteNew(f.root, rootPEM, 0o600)
	tokens := t.TempDir()
	os.WriteFile(filepath.Join(tokens, "fleet"), []byte(f.token+"\n"), 0o600)
	os.WriteFile(filepath.Join(tokens, "poll"), []byte(f.pollToken+"\n"), 0o600)
	groups := filepath.Join(tokens, "groups.yaml")
	os.WriteFile(groups, []byte("groups:\n  berlin: [gw-1, gw-2, gw-3, gw-4, gw-5]\n"), 0o600)
	f.fleetAddr = freeAddr(t, "tcp")
	recvAddr := freeAddr(t, "tcp")
	f.recv = &receiverProc{addr: recvAddr}
	// The gateways' keys are made first: the receiver trusts them.
	var trust []string
	for _, id := range []string{"gw-1", "gw-2", "gw-3", "gw-4", "gw-5"} {
		control := map[string]string{
			"gw-4": fmt.Sprintf("  type: mqtt\n  url: tcp://%s", f.mosquitto.addr),
			"gw-5": fmt.Sprintf("  type: http\n  url: http://%s%s\n  poll_wait: 2s\n  header: {Authorization: \"Bearer %s\"}", f.fleetAddr, protocol.CommandsPath, f.pollToken),
		}[id]
		if control == "" {
			control = "  type: jetstream\n  url: " + f.nats
		}
		g := f.addGateway(id, control)
		pub, _ := makeGatewayKey(t, g.data)
		trust = append(trust, id+"="+pub)
	}
	f.recv = startReceiverOn(t, recvAddr, []string{"--control-key", ctlKey, "--fleet-http", f.fleetAddr,
		"--fleet-token-file", filepath.Join(tokens, "fleet"), "--poll-token-file", filepath.Join(tokens, "poll"), "--groups", groups,
		"--commands-jetstream", f.nats, "--commands-mqtt", "tcp://" + f.mosquitto.addr, "--commands-republish", "1s"}, trust...)
	for _, id := range []string{"gw-1", "gw-2", "gw-4", "gw-5"} { // gw-3 is offline
		f.start(id)
	}
	defer func() {
		for _, d := range f.daemons {
			d.stop(t)
		}
	}()
	// The MQTT gateway's session exists before the push.
	time.Sleep(time.Second)
	devs := map[string]*testDevice{}
	for _, id := range []string{"gw-1", "gw-2", "gw-4", "gw-5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := dialDevice(ctx, f.gws[id], "plug-"+id)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		devs[id] = d
		if r := d.report(t); r.Status != protocol.StatusAccepted || r.Charged != 0 {
			t.Fatalf("%s baseline: %+v", id, r)
		}
	}
	effective := time.Now().Add(5 * time.Second)
	tariff := f.push(protocol.Command{Target: "berlin", Group: true, ID: "tariff-2027", Action: protocol.ActionTariffSet,
		Tariffs: newTariffs, Effective: uint64(effective.UnixMilli())})
	revoke := f.push(protocol.Command{Target: "berlin", Group: true, ID: "revoke-v9", Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-0009"}})
	if tariff.Seq != 1 || revoke.Seq != 2 {
		t.Fatalf("the group's seqs: %d, %d", tariff.Seq, revoke.Seq)
	}
	f.waitStatus("the running gateways apply both", func(st provider.FleetStatus) bool {
		return strings.Join(commandOf(st, "revoke-v9").Applied, ",") == "gw-1,gw-2,gw-4,gw-5"
	})
	// Before the effective time the old version prices; after it the new.
	for id, d := range devs {
		if time.Now().After(effective.Add(-time.Second)) {
			t.Fatal("the gateways took too long: the boundary passed before the tickets before it")
		}
		if r := d.report(t); r.Status != protocol.StatusAccepted || r.Charged != 300_000_000 {
			t.Fatalf("%s before the boundary: %+v; want 0.30 EUR", id, r)
		}
	}
	time.Sleep(time.Until(effective) + 100*time.Millisecond)
	for id, d := range devs {
		if r := d.report(t); r.Status != protocol.StatusAccepted || r.Charged != 500_000_000 {
			t.Fatalf("%s after the boundary: %+v; want 0.50 EUR", id, r)
		}
	}

	// A forged command (another key) and an expired one.
	forgerDir := t.TempDir()
	makeGatewayKey(t, forgerDir)
	forged := signWith(t, filepath.Join(forgerDir, "gateway.key"), protocol.Command{Target: "gw-1", Seq: 1, ID: "forged-1",
		NotBefore: uint64(time.Now().UnixMilli()), Expiry: uint64(time.Now().Add(time.Hour).UnixMilli()), Action: protocol.ActionRevokeVoucher,
		Vouchers: []string{"V-0001"}})
	publishJS(t, f.nats, protocol.CommandTarget{Name: "gw-1"}.Subject(""), "forged-1", forged)
	past := time.Now().Add(-time.Hour)
	f.push(protocol.Command{Target: "gw-2", ID: "expired-1", Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-0002"},
		NotBefore: uint64(past.UnixMilli()), Expiry: uint64(past.Add(time.Minute).UnixMilli())})
	st := f.waitStatus("the forged and the expired command refused and reported", func(st provider.FleetStatus) bool {
		return commandOf(st, "expired-1").Refused["gw-2"] == "command_expired" && len(st.Foreign) == 1
	})
	if a := st.Foreign[0]; a.Command != "forged-1" || a.Gateway != "gw-1" || !a.Refused || a.Reason != protocol.ReasonCommandForged {
		t.Errorf("the forged command's answer: %+v", a)
	}

	// SIGKILL between applying an adjustment and acknowledging it.
	f.daemons["gw-1"].stop(t)
	f.start("gw-1", gateway.CrashAfterCommandEnv+"=adjust-1")
	f.push(protocol.Command{Target: "gw-1", ID: "adjust-1", Action: protocol.ActionAdjust, Account: "fleet", Amount: 1_000_000_000,
		Currency: "EUR", Reason: "goodwill", Ref: "goodwill-1"})
	if err := waitExit(f.daemons["gw-1"], 20*time.Second); err != nil {
		t.Fatalf("gw-1 with the crash point: %v\n%s", err, f.gws["gw-1"].logText())
	}
	f.start("gw-1")
	f.waitStatus("the adjustment acknowledged", func(st provider.FleetStatus) bool {
		return strings.Join(commandOf(st, "adjust-1").Applied, ",") == "gw-1"
	})
	out, err := farthingCLI(t, "account", "entries", "fleet", "--data", f.gws["gw-1"].data, "--format", "json")
	if err != nil {
		t.Fatalf("account entries: %v %s", err, out)
	}
	if n := strings.Count(out, "goodwill-1"); n != 1 {
		t.Errorf("the adjustment is booked %d times: %s", n, out)
	}
	dup := `farthing_commands_total{action="adjust",outcome="duplicate",reason="none"}`
	for deadline := time.Now().Add(30 * time.Second); f.gws["gw-1"].metric(t, http.DefaultClient, dup) != "1"; {
		if time.Now().After(deadline) {
			t.Fatalf("gw-1 did not answer the redelivered command as a duplicate (%s = %q):\n%s", dup,
				f.gws["gw-1"].metric(t, http.DefaultClient, dup), f.gws["gw-1"].logText())
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitReport(t, []*receiverProc{f.recv}, func(rep *provider.Report) bool {
		n := 0
		for _, c := range rep.Credits {
			if c.Kind == protocol.CreditAdjustment && c.Account == "fleet" {
				n++
				if c.Amount != 1_000_000_000 || c.Count != 1 {
					t.Fatalf("adjustment credits: %+v", c)
				}
			}
		}
		return n == 1
	})

	// The tariff versions, as gw-1's operator sees them.
	out, err = farthingCLI(t, "tariff", "versions", "--data", f.gws["gw-1"].data)
	if err != nil || !strings.Contains(out, "tariff-2027") || !strings.Contains(out, "local-1") || !strings.Contains(out, "group berlin: applied up to seq 2") {
		t.Errorf("tariff versions: %v\n%s", err, out)
	}

	// A device provisioned by command serves at gw-2, until a command
	// revokes its key.
	provisionAndRevoke(t, f, "gw-2")

	// The offline gateway catches up, in order, and refuses the voucher.
	f.start("gw-3")
	f.waitStatus("gw-3 catches up", func(st provider.FleetStatus) bool {
		return len(st.Behind["gw-3"]) == 0 && strings.Contains(strings.Join(commandOf(st, "revoke-v9").Applied, ","), "gw-3")
	})
	log := f.gws["gw-3"].logText()
	if i, j := strings.Index(log, "command=tariff-2027"), strings.Index(log, "command=revoke-v9"); i < 0 || j < i {
		t.Errorf("gw-3 did not apply the group's commands in order:\n%s", log)
	}
	voucher, err := farthingCLI(t, "voucher", "issue", "--key", f.issuerKey, "--id", "V-0009", "--account", "fleet", "--amount", "5.00 EUR", "--expires", "24h")
	if err != nil {
		t.Fatal(err, voucher)
	}
	if out, err := farthingCLI(t, "voucher", "redeem", strings.TrimSpace(voucher), "--data", f.gws["gw-3"].data); err == nil || !strings.Contains(out, "voucher_revoked") {
		t.Errorf("a revoked voucher at the gateway that had been offline: %v %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d3, err := dialDevice(ctx, f.gws["gw-3"], "plug-gw-3")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close()
	d3.report(t)
	if r := d3.report(t); r.Charged != 500_000_000 {
		t.Errorf("gw-3 after catching up: %+v; want the new version's 0.50 EUR", r)
	}

	// A broker that lost gw-4's session while gw-4 was away: the
	// receiver publishes again what gw-4 has not answered.
	f.daemons["gw-4"].stop(t)
	f.mosquitto.kill()
	f.mosquitto.start(t)
	f.push(protocol.Command{Target: "berlin", Group: true, ID: "revoke-v10", Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-0010"}})
	time.Sleep(1500 * time.Millisecond) // published, and again, with no one subscribed
	f.start("gw-4")
	f.waitStatus("gw-4 gets what its broker lost", func(st provider.FleetStatus) bool {
		return strings.Join(commandOf(st, "revoke-v10").Applied, ",") == "gw-1,gw-2,gw-3,gw-4,gw-5"
	})

	// A tariff changed by hand at gw-5 is a local change, reported.
	os.WriteFile(filepath.Join(f.gws["gw-5"].data, "tariffs.yaml"), []byte(strings.Replace(newTariffs, "0.50", "0.40", 1)), 0o600)
	st = f.waitStatus("the local change reported", func(st provider.FleetStatus) bool { return len(st.Local) == 1 })
	if l := st.Local[0]; l.Gateway != "gw-5" || l.Action != protocol.ActionTariffSet || !strings.HasPrefix(l.Command, "local-") {
		t.Errorf("local change: %+v", l)
	}
	if r := devs["gw-5"].report(t); r.Charged != 400_000_000 {
		t.Errorf("gw-5 after its operator's change: %+v; want 0.40 EUR", r)
	}
	if len(st.Behind) != 0 {
		t.Errorf("gateways behind at the end: %v", st.Behind)
	}
}

// signWith signs c with the Ed25519 key file at path.
func signWith(t *testing.T, path string, c protocol.Command) []byte {
	t.Helper()
	k, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := protocol.NewEd25519Signer(k.Private)
	b, err := protocol.SignCommand(&c, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publishJS publishes b to JetStream as the provider would.
func publishJS(t *testing.T, url, subject, id string, b []byte) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, subject, b, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for a daemon to end by itself.
func waitExit(d *daemon, within time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case <-done:
		d.log.Close()
		return nil
	case <-time.After(within):
		d.cmd.Process.Kill()
		return fmt.Errorf("still running after %s", within)
	}
}

// provisionAndRevoke provisions an Ed25519 device at gateway id by
// command (its master secret from the fleet's device root, which `farthing
// fleet device-master` gives the provider), checks its tickets are
// charged, then revokes its key by command: its tickets are refused and
// it cannot connect again.
func provisionAndRevoke(t *testing.T, f *fleetRig, id string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	out, err := farthingCLI(t, "fleet", "device-master", "--root", f.root, "--device", "evse-new")
	master, herr := hex.DecodeString(strings.TrimSpace(out))
	if err != nil || herr != nil || len(master) != 32 {
		t.Fatalf("device-master: %v %s", err, out)
	}
	g := f.gws[id]
	g.secrets["evse-new"] = registry.Secrets{Master: master, Private: priv}
	tf := filepath.Join(t.TempDir(), "fleet.token")
	os.WriteFile(tf, []byte(f.token), 0o600)
	if out, err := farthingCLI(t, "fleet", "push", "provision", "--receiver", "http://"+f.fleetAddr, "--token-file", tf, "--gateway", id,
		"--id", "provision-evse-new", "--device", "evse-new", "--public-key", hex.EncodeToString(pub), "--account", "fleet",
		"--provider", "utility", "--tariff", "energy_wh=energy"); err != nil || !strings.Contains(out, "pushed provision-evse-new") {
		t.Fatalf("fleet push provision: %v %s", err, out)
	}
	f.waitStatus("the device provisioned", func(st provider.FleetStatus) bool {
		return strings.Join(commandOf(st, "provision-evse-new").Applied, ",") == id
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d, err := dialDevice(ctx, g, "evse-new")
	cancel()
	if err != nil {
		t.Fatalf("the provisioned device connects: %v\n%s", err, g.logText())
	}
	defer d.Close()
	d.report(t)
	if r := d.report(t); r.Status != protocol.StatusAccepted || r.Charged != 500_000_000 {
		t.Fatalf("the provisioned device's ticket: %+v", r)
	}
	kid := protocol.KeyIDOf(protocol.AlgEdDSA, pub)
	if out, err := farthingCLI(t, "fleet", "push", "revoke-device", "--receiver", "http://"+f.fleetAddr, "--token-file", tf, "--gateway", id,
		"--id", "revoke-evse-new", hex.EncodeToString(kid[:])); err != nil {
		t.Fatalf("fleet push revoke-device: %v %s", err, out)
	}
	f.waitStatus("the device revoked", func(st provider.FleetStatus) bool {
		return strings.Join(commandOf(st, "revoke-evse-new").Applied, ",") == id
	})
	if out, err := farthingCLI(t, "device", "list", "--data", g.data); err != nil || !strings.Contains(out, "evse-new (revoked, provisioned by command)") {
		t.Errorf("device list: %v\n%s", err, out)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if d2, err := dialDevice(ctx, g, "evse-new"); err == nil {
		d2.Close()
		t.Errorf("a revoked device connected again")
	}
}
