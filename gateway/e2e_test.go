package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

const testTariffs = `tariffs:
  - {id: energy, currency: EUR, unit: Wh, period: none, price: 0.30 EUR, per: 1000}
  - {id: ontime, currency: EUR, unit: ms, period: none, price: 0.000001 EUR, per: 7}
`

// freePort returns a free loopback TCP address.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// freeTCP returns a free loopback TCP port.
func freeTCP(t testing.TB) int {
	_, port, _ := net.SplitHostPort(freePort(t))
	n, _ := strconv.Atoi(port)
	return n
}

type testGateway struct {
	*gateway.Gateway
	cfg     *gateway.Config
	secrets map[string]registry.Secrets
	broker  string
	stop    func()
	logs    *syncBuffer // the gateway's log, info and above
}

// syncBuffer is a bytes.Buffer for a logger that other goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type devSpec struct{ id, keyType, account string }

// startGateway runs a gateway with an embedded broker in a temporary data
// directory, with the given devices provisioned.
func startGateway(t testing.TB, devs []devSpec, opts ...func(*gateway.Config)) *testGateway {
	dir := t.TempDir()
	cfg := &gateway.Config{GatewayID: "gw-test", DataDir: dir,
		Accounts: []gateway.AccountConfig{
			{ID: "prepaid-1", Kind: "prepaid", Currency: "EUR", Balance: "10.00"},
			{ID: "poor", Kind: "prepaid", Currency: "EUR", Balance: "0.000001"},
			{ID: "fleet", Kind: "postpaid", Currency: "EUR", CreditLimit: "1000"},
		},
		Providers: []gateway.ProviderConfig{{ID: "utility", Window: time.Hour}},
		MQTT:      gateway.MQTTConfig{Listen: freePort(t)}, HTTP: gateway.HTTPConfig{Listen: "127.0.0.1:0"},
		DTLS: gateway.DTLSConfig{Listen: "127.0.0.1:0"}}
	os.WriteFile(filepath.Join(dir, "tariffs.yaml"), []byte(testTariffs), 0o600)
	tg := &testGateway{cfg: cfg, secrets: map[string]registry.Secrets{}}
	var rf registry.File
	for _, d := range devs {
		e, s, err := registry.NewDevice(d.id, d.keyType, d.account, "utility", map[string]string{"energy_wh": "energy", "on_ms": "ontime"})
		if err != nil {
			t.Fatal(err)
		}
		rf.Devices = append(rf.Devices, e)
		tg.secrets[d.id] = s
	}
	if err := registry.WriteFile(filepath.Join(dir, "devices.yaml"), &rf); err != nil {
		t.Fatal(err)
	}
	full, err := gateway.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	// Defaults for what the test did not set.
	cfg.KeyFile, cfg.Tariffs, cfg.Devices = filepath.Join(dir, "gateway.key"), filepath.Join(dir, "tariffs.yaml"), filepath.Join(dir, "devices.yaml")
	cfg.MQTT.Mode, cfg.MQTT.TopicPrefix, cfg.Limits = "embedded", "farthing/v1", full.Limits
	for _, o := range opts {
		o(cfg)
	}
	tg.logs = &syncBuffer{}
	tg.Gateway, tg.stop = runGatewayLog(t, cfg, tg.logs)
	tg.broker = "tcp://" + cfg.MQTT.Listen
	return tg
}

// runGateway starts a gateway on cfg, waits until it is ready, and stops
// it when the test ends; stop may also be called earlier.
func runGateway(t testing.TB, cfg *gateway.Config) (*gateway.Gateway, func()) {
	return runGatewayLog(t, cfg, io.Discard)
}

// runGatewayLog is runGateway with the gateway's log (info and above)
// written to w.
func runGatewayLog(t testing.TB, cfg *gateway.Config, w io.Writer) (*gateway.Gateway, func()) {
	g, err := gateway.New(cfg, slog.New(slog.NewTextHandler(w, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("gateway stopped: %v", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return g, stop
}

type memSeq struct{ v uint64 }

func (m *memSeq) LoadSeq() (uint64, error) { return m.v, nil }
func (m *memSeq) SaveSeq(v uint64) error   { m.v = v; return nil }

// device is a real paho device running devicefw.
type device struct {
	*mqttdev.Device
	receipts chan protocol.Receipt
}

func connectDevice(t testing.TB, tg *testGateway, id string) *device {
	s := tg.secrets[id]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: id, Meters: []string{"energy_wh", "on_ms"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 16*protocol.MaxTicketSize)})
	if err != nil {
		t.Fatal(err)
	}
	return connectPaywordDevice(t, tg, id, c)
}

// connectPaywordDevice connects device id over the embedded broker with
// the devicefw client c.
func connectPaywordDevice(t testing.TB, tg *testGateway, id string, c *devicefw.Client) *device {
	d := &device{receipts: make(chan protocol.Receipt, 1000)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	d.Device, err = mqttdev.Connect(ctx, mqttdev.Config{Broker: tg.broker, Device: id, Password: tg.secrets[id].MQTTPassword(), Client: c,
		OnReceipt: func(r protocol.Receipt, err error) {
			if err == nil || err == devicefw.ErrNotPending {
				d.receipts <- r
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func (d *device) next(t testing.TB) protocol.Receipt {
	t.Helper()
	select {
	case r := <-d.receipts:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt within 10s")
		return protocol.Receipt{}
	}
}

// rawClient publishes arbitrary bytes as a device.
type rawClient struct {
	paho.Client
	id       string
	receipts chan []byte
}

func connectRaw(t testing.TB, tg *testGateway, user, password string) (*rawClient, error) {
	rc := &rawClient{id: user, receipts: make(chan []byte, 100)}
	opts := paho.NewClientOptions().AddBroker(tg.broker).SetClientID(fmt.Sprintf("raw-%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(password).SetAutoReconnect(false)
	rc.Client = paho.NewClient(opts)
	if tok := rc.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() != nil {
		return nil, tok.Error()
	}
	if tok := rc.Subscribe("farthing/v1/"+user+"/receipt", 1, func(_ paho.Client, m paho.Message) { rc.receipts <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { rc.Disconnect(100) })
	return rc, nil
}

func (rc *rawClient) publish(t testing.TB, topicDevice string, payload []byte) {
	t.Helper()
	if tok := rc.Publish("farthing/v1/"+topicDevice+"/ticket", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func (rc *rawClient) receipt(t testing.TB, tg *testGateway) protocol.Receipt {
	t.Helper()
	select {
	case b := <-rc.receipts:
		rv, _ := tg.secrets[rc.id].ReceiptVerifier()
		var env protocol.Envelope
		var r protocol.Receipt
		if err := protocol.ParseReceipt(b, &env, &r); err != nil {
			t.Fatalf("receipt does not parse: %v", err)
		}
		if err := env.Verify(rv, nil); err != nil {
			t.Fatalf("receipt does not verify with the device's receipt key: %v", err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt within 10s")
		return protocol.Receipt{}
	}
}

func now() uint64 { return uint64(time.Now().UnixMilli()) }

func TestTicketsAcceptedAndReconciled(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}, {"evse-1", "ed25519", "fleet"}})
	var charged uint64
	for _, id := range []string{"plug-1", "evse-1"} {
		d := connectDevice(t, tg, id)
		for i := uint64(0); i < 25; i++ {
			if _, err := d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1000 + 137*i}, {Meter: 1, Register: 60_000 * i}}); err != nil {
				t.Fatal(err)
			}
			r := d.next(t)
			if r.Status != protocol.StatusAccepted || !r.HasBalance || r.Currency != "EUR" {
				t.Fatalf("%s ticket %d: %+v", id, i, r)
			}
			if i == 0 && r.Charged != 0 {
				t.Fatalf("the first reading is a baseline; charged %d", r.Charged)
			}
			charged += r.Charged
		}
		if d.Pending() != 0 {
			t.Errorf("%s: %d tickets still pending", id, d.Pending())
		}
	}
	// 24 × 137 Wh at 0.30/kWh and 24 × 60 s at 1e-6 EUR per 7 ms, per device.
	if charged == 0 {
		t.Fatal("nothing charged")
	}
	rep, err := tg.Books().Inspect(&tg.Ingest().Snapshot().Terms)
	if err != nil {
		t.Fatal(err)
	}
	rc := rep.Reconcile
	if !rc.Balanced || uint64(rc.ReceiptsCharged) != charged || rc.Tickets != 50 {
		t.Fatalf("reconcile %+v; device receipts charged %d", rc, charged)
	}
}

func TestReplayedTicketChargesNothing(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	rc, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := tg.secrets["plug-1"].Signer()
	var enc protocol.Encoder
	ticket := func(seq, reg uint64) []byte {
		b, err := enc.AppendTicket(nil, &protocol.Ticket{Device: "plug-1", Seq: seq, Time: now(), Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rc.publish(t, "plug-1", ticket(1, 100))
	rc.receipt(t, tg)
	second := ticket(2, 5100)
	rc.publish(t, "plug-1", second)
	first := rc.receipt(t, tg)
	if first.Status != protocol.StatusAccepted || first.Charged != 1_500_000_000 {
		t.Fatalf("5 kWh at 0.30: %+v", first)
	}
	before, _ := tg.Books().Inspect(nil)
	rc.publish(t, "plug-1", second) // the same bytes again
	again := rc.receipt(t, tg)
	if again.Status != protocol.StatusDuplicate || again.Charged != first.Charged || again.Seq != 2 {
		t.Fatalf("replay answered %+v; want duplicate with the original charge", again)
	}
	after, _ := tg.Books().Inspect(nil)
	if !reflect.DeepEqual(after.Reconcile, before.Reconcile) || after.Accounts[0].Balance != before.Accounts[0].Balance {
		t.Fatalf("a replay changed the books: %+v → %+v", before.Reconcile, after.Reconcile)
	}
	if again.Reason != protocol.ReasonNone {
		t.Fatalf("a repeat of an accepted ticket answered with reason %v", again.Reason)
	}
	// An older seq that was never seen is superseded: duplicate, charges
	// nothing, and says so.
	rc.publish(t, "plug-1", ticket(10, 6100))
	if r := rc.receipt(t, tg); r.Status != protocol.StatusAccepted {
		t.Fatalf("seq 10: %+v", r)
	}
	rc.publish(t, "plug-1", ticket(7, 5600))
	if r := rc.receipt(t, tg); r.Status != protocol.StatusDuplicate || r.Reason != protocol.ReasonSuperseded || r.Charged != 0 {
		t.Fatalf("a never-seen seq below the last answered %+v; want duplicate, superseded, 0 charged", r)
	}
}

func TestTicketOfOneDeviceOnAnothersTopic(t *testing.T) {
	tg := startGateway(t, []devSpec{{"dev-a", "ed25519", "fleet"}, {"dev-b", "hmac", "fleet"}})
	b, err := connectRaw(t, tg, "dev-b", tg.secrets["dev-b"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	signerA, _ := tg.secrets["dev-a"].Signer()
	var enc protocol.Encoder
	ticketA, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: "dev-a", Seq: 1, Time: now(), Readings: []protocol.Reading{{Meter: "energy_wh", Register: 1}}}, signerA)
	// Device B sends A's ticket on its own topic: refused by the gateway.
	b.publish(t, "dev-b", ticketA)
	if r := b.receipt(t, tg); r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonDeviceMismatch {
		t.Fatalf("A's ticket as B: %+v; want rejected device_mismatch", r)
	}
	// Device B publishing on A's topic is refused by the broker's ACL
	// (MQTT 3.1.1: the connection is dropped).
	b.Publish("farthing/v1/dev-a/ticket", 1, false, ticketA).WaitTimeout(2 * time.Second)
	rep, _ := tg.Books().Inspect(nil)
	if rep.Reconcile.Tickets != 0 || len(rep.Devices) != 0 {
		t.Fatalf("a refused ticket changed the state: %+v", rep)
	}
	if _, err := connectRaw(t, tg, "dev-a", "wrong-password"); err == nil {
		t.Fatal("connected with a wrong password")
	}
}

func TestGarbageGetsAReasonAndChangesNothing(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	rc, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	before, _ := tg.Books().Inspect(nil)
	for _, tc := range []struct {
		payload []byte
		reason  protocol.Reason
	}{
		{[]byte("not a ticket at all"), protocol.ReasonUnexpectedTag},
		{[]byte{0xd1, 0x84, 0x40}, protocol.ReasonMalformed},
		{make([]byte, protocol.MaxTicketSize+1), protocol.ReasonTooLarge},
	} {
		rc.publish(t, "plug-1", tc.payload)
		r := rc.receipt(t, tg)
		if r.Status != protocol.StatusRejected || r.Reason != tc.reason || r.Seq != 0 {
			t.Errorf("garbage %x…: %+v; want rejected %v", tc.payload[:min(8, len(tc.payload))], r, tc.reason)
		}
	}
	after, _ := tg.Books().Inspect(nil)
	if !reflect.DeepEqual(after.Reconcile, before.Reconcile) || len(after.Devices) != 0 {
		t.Fatalf("garbage changed the state")
	}
}

func TestInsufficientFunds(t *testing.T) {
	tg := startGateway(t, []devSpec{{"kiosk", "hmac", "poor"}})
	d := connectDevice(t, tg, "kiosk")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 0}})
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("baseline: %+v", r)
	}
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 10_000}}) // 3 EUR on a 0.000001 EUR balance
	r := d.next(t)
	if r.Status != protocol.StatusInsufficientFunds || !r.HasBalance || r.Balance != 1000 || r.Charged != 0 {
		t.Fatalf("charge past the balance: %+v", r)
	}
	rep, _ := tg.Books().Inspect(nil)
	if !rep.Reconcile.Balanced || rep.Reconcile.LedgerCharged != 0 {
		t.Fatalf("an unpaid ticket reached the ledger: %+v", rep.Reconcile)
	}
}

// A device with many tickets in flight: the embedded broker reads the next
// ticket while earlier ones wait for their commit, yet commits them in
// arrival order (none is taken for a repeat), acknowledges each only after
// its commit, and answers them in order.
func TestPipelinedTicketsKeepOrderAndDurability(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}})
	rc, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	rc.receipts = make(chan []byte, 400)
	const n = 300
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = rc.Publish("farthing/v1/plug-1/ticket", 1, false, signed(t, tg, "plug-1", uint64(i+1), uint64(1000+10*i)))
	}
	stored := func(seq uint64) bool {
		_, _, ok := tg.Books().StoredTicket("plug-1", seq)
		return ok
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("ticket %d: no PUBACK: %v", i+1, tok.Error())
		}
		if !stored(uint64(i + 1)) {
			t.Fatalf("ticket %d acknowledged before it was committed", i+1)
		}
	}
	for i := 0; i < n; i++ {
		r := rc.receipt(t, tg)
		if r.Seq != uint64(i+1) || r.Status != protocol.StatusAccepted {
			t.Fatalf("receipt %d: seq %d status %v", i+1, r.Seq, r.Status)
		}
	}
	if st := tg.Store().Stats(); st.Commits >= n {
		t.Errorf("%d tickets took %d commits: they did not share them", n, st.Commits)
	}
}
