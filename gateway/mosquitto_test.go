package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// mosquitto runs a real Mosquitto on a free loopback port with password
// authentication, the ACL and settings the project ships for external
// mode (mqtt/mosquitto/farthing.acl and farthing.conf): each device may
// publish its own ticket topic and read its own receipt topic, its client
// id is its user name; the gateway user reads every ticket topic and
// writes every receipt topic.
type mosquitto struct {
	addr, bin, conf string
	cmd             *exec.Cmd
}

func startMosquitto(t *testing.T, users map[string]string) *mosquitto {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("mosquitto is not installed; scripts/test.sh installs it (apt-get install -y mosquitto)")
			}
			t.Skip("mosquitto is not installed; run scripts/test.sh, which installs it")
		}
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	first := true
	for u, p := range users {
		args := []string{"-b", pw, u, p}
		if first {
			args = append([]string{"-c"}, args...)
			first = false
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	acl, err := filepath.Abs(filepath.Join("mqtt", "mosquitto", "farthing.acl"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join("mqtt", "mosquitto", "farthing.conf"))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	// Run as root, Mosquitto drops to the "mosquitto" user, which cannot
	// read the test's private files: keep the current user.
	userLine := ""
	if os.Geteuid() == 0 {
		userLine = "user root\n"
	}
	os.WriteFile(conf, []byte(userLine+fmt.Sprintf("listener %d 127.0.0.1\npassword_file %s\nacl_file %s\n", port, pw, acl)+string(shipped)), 0o600)
	m := &mosquitto{addr: fmt.Sprintf("127.0.0.1:%d", port), bin: bin, conf: conf}
	m.start(t)
	t.Cleanup(m.kill)
	return m
}

// kill stops Mosquitto with SIGKILL.
func (m *mosquitto) kill() {
	if m.cmd != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
		m.cmd = nil
	}
}

// start runs Mosquitto on its configuration and waits until it listens.
func (m *mosquitto) start(t *testing.T) {
	cmd := exec.Command(m.bin, "-c", m.conf)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.cmd = cmd
	verbose := testing.Verbose()
	go func() { // keep the pipe drained
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if verbose {
				fmt.Fprintln(os.Stderr, "mosquitto: "+s.Text())
			}
		}
	}()
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", m.addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("mosquitto did not start")
}

// TestReadinessFollowsTheExternalBroker: in external mode /readyz is
// green while the gateway's subscription stands, red while Mosquitto is
// down, and green again once the gateway has reconnected.
func TestReadinessFollowsTheExternalBroker(t *testing.T) {
	var m *mosquitto
	tg := startGatewayExternal(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}}, func(secrets map[string]registry.Secrets) (string, string) {
		users := map[string]string{"farthingd": "gateway-secret"}
		for id, s := range secrets {
			users[id] = s.MQTTPassword()
		}
		m = startMosquitto(t, users)
		return "tcp://" + m.addr, "gateway-secret"
	})
	readyz := func() int { code, _ := httpGet(t, "http://"+tg.HTTPAddr()+"/readyz"); return code }
	waitFor := func(want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for readyz() != want {
			if time.Now().After(deadline) {
				t.Fatalf("/readyz did not become %d within %v", want, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor(200, 5*time.Second)
	m.kill()
	waitFor(503, 10*time.Second)
	_, body := httpGet(t, "http://"+tg.HTTPAddr()+"/readyz")
	if !strings.Contains(body, "mqtt not accepting tickets") {
		t.Fatalf("/readyz with the broker down says %q", body)
	}
	m.start(t)
	waitFor(200, 20*time.Second)
	d := connectDevice(t, tg, "plug-1")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1}})
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("ticket after the broker came back: %+v", r)
	}
}

// TestExternalMosquitto: the same pipeline behind a real Mosquitto that the
// gateway does not own.
func TestExternalMosquitto(t *testing.T) {
	devs := []devSpec{{"plug-1", "hmac", "prepaid-1"}, {"evse-1", "ed25519", "fleet"}}
	// Provision first, to give Mosquitto the devices' passwords.
	tg := startGatewayExternal(t, devs, func(secrets map[string]registry.Secrets) (string, string) {
		users := map[string]string{"farthingd": "gateway-secret"}
		for id, s := range secrets {
			users[id] = s.MQTTPassword()
		}
		m := startMosquitto(t, users)
		return "tcp://" + m.addr, "gateway-secret"
	})
	var charged uint64
	for _, id := range []string{"plug-1", "evse-1"} {
		d := connectDevice(t, tg, id)
		for i := uint64(0); i < 20; i++ {
			if _, err := d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 500 * i}}); err != nil {
				t.Fatal(err)
			}
			r := d.next(t)
			if r.Status != protocol.StatusAccepted {
				t.Fatalf("%s via Mosquitto: %+v", id, r)
			}
			charged += r.Charged
		}
		d.Close() // one session per device: the raw client below takes plug-1's
	}
	// A's ticket on B's own topic: Mosquitto lets B publish there, the
	// gateway refuses it.
	b, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	signerA, _ := tg.secrets["evse-1"].Signer()
	var enc protocol.Encoder
	ticketA, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: "evse-1", Seq: 1 << 40, Time: now(), Readings: []protocol.Reading{{Meter: "energy_wh", Register: 1 << 30}}}, signerA)
	b.publish(t, "plug-1", ticketA)
	if r := b.receipt(t, tg); r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonDeviceMismatch {
		t.Fatalf("A's ticket as B through Mosquitto: %+v", r)
	}
	rep, err := tg.Books().Inspect(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Reconcile.Balanced || uint64(rep.Reconcile.ReceiptsCharged) != charged || rep.Reconcile.Tickets != 40 {
		t.Fatalf("reconcile %+v; devices were charged %d", rep.Reconcile, charged)
	}
	mosquittoHoldsSessionsAndWills(t, tg)
}

// mosquittoHoldsSessionsAndWills checks the shipped Mosquitto settings
// against two abuses by a device with valid credentials (evse-1): taking
// over plug-1's session with plug-1's client id, and leaving a Will on
// plug-1's receipt topic.
func mosquittoHoldsSessionsAndWills(t *testing.T, tg *testGateway) {
	connect := func(user, clientID string, opt func(*paho.ClientOptions)) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker(tg.broker).SetClientID(clientID).SetUsername(user).
			SetPassword(tg.secrets[user].MQTTPassword()).SetAutoReconnect(false).SetProtocolVersion(4)
		if opt != nil {
			opt(o)
		}
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return c, fmt.Errorf("connect timed out")
		}
		return c, tok.Error()
	}
	var lost atomic.Bool
	got := make(chan string, 10)
	a, err := connect("plug-1", "plug-1", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { lost.Store(true) })
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Disconnect(100)
	if tok := a.Subscribe("farthing/v1/plug-1/receipt", 0, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if b, err := connect("evse-1", "plug-1", nil); err == nil {
		defer b.Disconnect(100)
	}
	var conn net.Conn
	w, err := connect("evse-1", "evse-1-will", func(o *paho.ClientOptions) {
		o.SetWill("farthing/v1/plug-1/receipt", "forged receipt", 0, false)
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			conn = c
			return c, err
		})
	})
	if err == nil {
		conn.Close() // dropped without DISCONNECT: a Will would go out now
		w.Disconnect(0)
	}
	select {
	case m := <-got:
		t.Fatalf("through Mosquitto, evse-1's Will reached plug-1's receipt topic: %q", m)
	case <-time.After(time.Second):
	}
	if lost.Load() || !a.IsConnectionOpen() {
		t.Fatal("through Mosquitto, evse-1 took over plug-1's session with plug-1's client id")
	}
}

// startGatewayExternal is startGateway in external mode; broker starts
// the broker once the devices are provisioned and returns its URL and the
// gateway's password.
func startGatewayExternal(t *testing.T, devs []devSpec, broker func(map[string]registry.Secrets) (string, string), extraYAML ...string) *testGateway {
	dir := t.TempDir()
	secrets := map[string]registry.Secrets{}
	var rf registry.File
	for _, d := range devs {
		e, s, err := registry.NewDevice(d.id, d.keyType, d.account, "utility", map[string]string{"energy_wh": "energy", "on_ms": "ontime"})
		if err != nil {
			t.Fatal(err)
		}
		rf.Devices = append(rf.Devices, e)
		secrets[d.id] = s
	}
	url, password := broker(secrets)
	os.WriteFile(filepath.Join(dir, "tariffs.yaml"), []byte(testTariffs), 0o600)
	registry.WriteFile(filepath.Join(dir, "devices.yaml"), &rf)
	conf := filepath.Join(dir, "farthingd.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`gateway_id: gw-ext
data_dir: %s
accounts:
  - {id: prepaid-1, kind: prepaid, currency: EUR, balance: "10.00"}
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "1000"}
providers:
  - {id: utility, window: 1h}
mqtt: {mode: external, broker: "%s", username: farthingd, password: "%s", client_id: farthingd-test}
http: {listen: "127.0.0.1:0"}
dtls: {listen: "off"}
%s`, dir, url, password, strings.Join(extraYAML, "\n"))), 0o600)
	cfg, err := gateway.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := runGateway(t, cfg) // ready: the gateway's subscription is confirmed
	tg := &testGateway{Gateway: g, cfg: cfg, secrets: secrets, broker: url}
	return tg
}

// TestMosquittoPubSubmitsTicketFile: mosquitto_pub, a client no one here
// wrote, sends a ticket file to the embedded broker and it is accepted.
func TestMosquittoPubSubmitsTicketFile(t *testing.T) {
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto_pub is not installed; scripts/test.sh installs it (apt-get install -y mosquitto-clients)")
		}
		t.Skip("mosquitto_pub is not installed; run scripts/test.sh, which installs it")
	}
	tg := startGateway(t, []devSpec{{"plug-9", "hmac", "prepaid-1"}})
	signer, _ := tg.secrets["plug-9"].Signer()
	var enc protocol.Encoder
	file := filepath.Join(t.TempDir(), "ticket.cbor")
	for seq, reg := range []uint64{100, 2100} {
		b, err := enc.AppendTicket(nil, &protocol.Ticket{Device: "plug-9", Seq: uint64(seq + 1), Time: now(),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}, signer)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(file, b, 0o600)
		host, port, _ := net.SplitHostPort(tg.cfg.MQTT.Listen)
		out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "plug-9", "-P", tg.secrets["plug-9"].MQTTPassword(),
			"-i", fmt.Sprintf("mosquitto-pub-%d", seq), "-q", "1", "-t", "farthing/v1/plug-9/ticket", "-f", file).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	}
	rep, _ := tg.Books().Inspect(nil)
	// mosquitto_pub waits for the PUBACK, which comes after the commit.
	if rep.Reconcile.Tickets != 2 || rep.Reconcile.ReceiptsCharged != 600_000_000 {
		t.Fatalf("after two tickets from mosquitto_pub: %+v; want 2 tickets charging 0.60 EUR", rep.Reconcile)
	}
}

// TestExternalMosquittoVoucher: behind Mosquitto with the shipped ACL, a
// device passes a voucher on its voucher topic and the gateway, a client
// of the broker, redeems it and answers with a receipt.
func TestExternalMosquittoVoucher(t *testing.T) {
	priv, pubPath := issuerKey(t)
	tg := startGatewayExternal(t, []devSpec{{"kiosk-1", "hmac", "prepaid-1"}}, func(secrets map[string]registry.Secrets) (string, string) {
		users := map[string]string{"farthingd": "gateway-secret"}
		for id, s := range secrets {
			users[id] = s.MQTTPassword()
		}
		return "tcp://" + startMosquitto(t, users).addr, "gateway-secret"
	}, "voucher_issuers: ["+pubPath+"]")
	signer, _ := protocol.NewEd25519Signer(priv)
	var enc protocol.Encoder
	v, _ := enc.AppendVoucher(nil, &protocol.Voucher{ID: "V-EXT", Account: "prepaid-1", Amount: 2_000_000_000, Currency: "EUR",
		Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}, signer)
	d := connectDevice(t, tg, "kiosk-1")
	if err := d.Redeem(v); err != nil {
		t.Fatal(err)
	}
	if r := d.next(t); r.Voucher != "V-EXT" || r.Status != protocol.StatusAccepted || r.Balance != 12_000_000_000 {
		t.Fatalf("voucher through Mosquitto: %+v; want accepted, balance 12.00 EUR", r)
	}
}
