package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

type daemon struct {
	cmd *exec.Cmd
	log *os.File
}

func startDaemon(t *testing.T, bin, config, addr string) *daemon {
	return startDaemonCmd(t, exec.Command(bin, "--config", config), config, addr)
}

// startDaemonCmd starts cmd (a farthingd with config) with its output in
// farthingd.log next to config, and waits until it listens on addr.
func startDaemonCmd(t *testing.T, cmd *exec.Cmd, config, addr string) *daemon {
	log, err := os.OpenFile(filepath.Join(filepath.Dir(config), "farthingd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, log: log}
	if !listening(addr, 15*time.Second) {
		d.cmd.Process.Kill()
		t.Fatalf("farthingd did not listen on %s", addr)
	}
	return d
}

func (d *daemon) kill(t *testing.T) {
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.cmd.Wait()
	d.log.Close()
}

func (d *daemon) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("farthingd exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		t.Error("farthingd did not stop within 20s of SIGTERM")
	}
	d.log.Close()
}

type memSeq struct {
	mu sync.Mutex
	v  uint64
}

func (m *memSeq) LoadSeq() (uint64, error) { m.mu.Lock(); defer m.mu.Unlock(); return m.v, nil }
func (m *memSeq) SaveSeq(v uint64) error   { m.mu.Lock(); defer m.mu.Unlock(); m.v = v; return nil }

// seen is what one device learnt from receipts.
type seen struct {
	mu         sync.Mutex
	accepted   map[uint64]uint64 // seq → charged
	duplicates map[uint64]uint64
	others     int
	sent       map[uint64][]byte // seq → the ticket's bytes
}

// TestCrashLosesNothingCountsNothingTwice kills the daemon with SIGKILL
// in the middle of a load, restarts it, lets the devices resend what they
// hold, and checks the books against what every device was told.
func TestCrashLosesNothingCountsNothingTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test builds and kills a daemon")
	}
	bin := buildDaemon(t)
	dir := t.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	// The provider's receiver, over HTTP; it trusts the gateway's key once
	// the first start made it.
	recvMux := &swapHandler{}
	recvSrv := httptest.NewServer(recvMux)
	defer recvSrv.Close()
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	httpAddr := l2.Addr().String()
	l2.Close()
	config := filepath.Join(dir, "farthingd.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`gateway_id: gw-crash
data_dir: %s
accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "1000000"}
providers:
  - {id: utility, window: 1s, threshold: "0.05 EUR"}
mqtt: {listen: "%s"}
http: {listen: "%s"}
dtls: {listen: "off"}
upstreams:
  - {name: provider, type: http, url: "%s/aggregates"}
forward: {drain_rate: 5000, backoff_min: 20ms, backoff_max: 200ms}
`, filepath.Join(dir, "data"), addr, httpAddr, recvSrv.URL)), 0o600)
	os.MkdirAll(filepath.Join(dir, "data"), 0o700)
	os.WriteFile(filepath.Join(dir, "data", "tariffs.yaml"), []byte("tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.30 EUR, per: 1000}\n"), 0o600)
	const nDev = 6
	var rf registry.File
	secrets := map[string]registry.Secrets{}
	for i := 0; i < nDev; i++ {
		typ := "hmac"
		if i%3 == 2 {
			typ = "ed25519"
		}
		e, s, err := registry.NewDevice(fmt.Sprintf("dev-%d", i), typ, "fleet", "utility", map[string]string{"energy_wh": "energy"})
		if err != nil {
			t.Fatal(err)
		}
		rf.Devices = append(rf.Devices, e)
		secrets[e.ID] = s
	}
	registry.WriteFile(filepath.Join(dir, "data", "devices.yaml"), &rf)

	d := startDaemon(t, bin, config, addr)
	gk, err := keyfile.Load(filepath.Join(dir, "data", "gateway.key"))
	if err != nil {
		t.Fatal(err)
	}
	recv, err := provider.Open(filepath.Join(dir, "receiver.db"), provider.Keys(gk.Private.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	recvMux.set(recv.Handler(slog.New(slog.NewTextHandler(io.Discard, nil)), provider.ReadAccess{}))
	type dev struct {
		id string
		*mqttdev.Device
		seen *seen
	}
	var devs []*dev
	for _, e := range rf.Devices {
		s := secrets[e.ID]
		signer, _ := s.Signer()
		rv, _ := s.ReceiptVerifier()
		c, err := devicefw.New(devicefw.Config{Device: e.ID, Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
			Seq: &memSeq{}, Pending: make([]byte, 32*protocol.MaxTicketSize)})
		if err != nil {
			t.Fatal(err)
		}
		sn := &seen{accepted: map[uint64]uint64{}, duplicates: map[uint64]uint64{}, sent: map[uint64][]byte{}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		md, err := mqttdev.Connect(ctx, mqttdev.Config{Broker: "tcp://" + addr, Device: e.ID, Password: s.MQTTPassword(), Client: c,
			OnPublish: func(seq uint64, b []byte) { sn.mu.Lock(); sn.sent[seq] = b; sn.mu.Unlock() },
			OnReceipt: func(r protocol.Receipt, err error) {
				if err != nil && !errors.Is(err, devicefw.ErrNotPending) {
					return
				}
				sn.mu.Lock()
				defer sn.mu.Unlock()
				switch r.Status {
				case protocol.StatusAccepted:
					if _, dup := sn.accepted[r.Seq]; dup {
						t.Errorf("%s: seq %d accepted twice", e.ID, r.Seq)
					}
					sn.accepted[r.Seq] = r.Charged
				case protocol.StatusDuplicate:
					sn.duplicates[r.Seq] = r.Charged
				default:
					sn.others++
				}
			}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		devs = append(devs, &dev{id: e.ID, Device: md, seen: sn})
	}

	// Load: every device reports every 2 ms; the daemon is killed during it.
	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	for _, dv := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reg := uint64(0)
			for {
				select {
				case <-stopLoad:
					return
				case <-time.After(2 * time.Millisecond):
				}
				reg += 7
				dv.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}})
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	d.kill(t)
	t.Log("farthingd killed with SIGKILL under load")
	time.Sleep(300 * time.Millisecond)
	d = startDaemon(t, bin, config, addr)
	// The kill came between checkpoints: what the tickets since the last
	// one wrote was only in the journal, and the restart replayed it.
	if b, _ := os.ReadFile(filepath.Join(filepath.Dir(config), "farthingd.log")); !strings.Contains(string(b), "journal was replayed") {
		t.Errorf("the restart after SIGKILL replayed no journal: the kill did not land between checkpoints")
	}
	time.Sleep(1500 * time.Millisecond)
	close(stopLoad)
	wg.Wait()

	// Let every device get an answer for everything it holds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending := 0
		for _, dv := range devs {
			pending += dv.Pending()
			if dv.Pending() > 0 {
				dv.ResendPending()
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tickets still pending 30s after the load", pending)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Replay each device's last accepted ticket as raw bytes: "duplicate"
	// with the original charge.
	replayed := 0
	for _, dv := range devs {
		dv.seen.mu.Lock()
		var last uint64
		for s := range dv.seen.accepted {
			last = max(last, s)
		}
		dv.seen.mu.Unlock()
		if last == 0 {
			continue
		}
		dv.seen.mu.Lock()
		raw, want := dv.seen.sent[last], dv.seen.accepted[last]
		dv.seen.mu.Unlock()
		rc := rawReceipt(t, addr, dv.id, secrets[dv.id], raw)
		if rc.Status != protocol.StatusDuplicate || rc.Charged != want {
			t.Errorf("%s: replay of seq %d answered %+v; want duplicate charging %d", dv.id, last, rc, want)
		}
		replayed++
	}
	if replayed == 0 {
		t.Fatal("no device had an accepted ticket")
	}
	// Let the windows seal on their timer (late tickets their folds, after
	// corrections.fold) and the outbox drain.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var live ledger.Report
		if resp, err := operatorGet(filepath.Join(dir, "data"), "/inspect"); err == nil {
			json.NewDecoder(resp.Body).Decode(&live)
			resp.Body.Close()
		}
		if live.Outbox == 0 && len(live.OpenWindows) == 0 && live.Reconcile.WindowsLate == 0 && live.Reconcile.Tickets > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox %d, open windows %d, late %d after 30s", live.Outbox, len(live.OpenWindows), live.Reconcile.WindowsLate)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.stop(t)

	// The books: every accepted ticket exactly once, with its charge.
	st, err := store.Open(filepath.Join(dir, "data", gateway.StateFile), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := ledger.New(st, ledger.Config{}).Inspect(nil)
	if err != nil {
		t.Fatal(err)
	}
	// What the devices were told must match what is stored: an accepted
	// seq is stored with its charge; a duplicate is either a stored ticket
	// answered with its original charge, or an older ticket a newer one
	// superseded, which charges nothing.
	told := map[string]bool{}
	var acceptedN, dupN int
	for _, dv := range devs {
		dv.seen.mu.Lock()
		for seq, charged := range dv.seen.accepted {
			acceptedN++
			told[fmt.Sprint(dv.id, "/", seq)] = true
			if got, ok := storedCharge(t, st, dv.id, seq); !ok || got != charged {
				t.Errorf("%s seq %d: told accepted with %d, stored %d (%v)", dv.id, seq, charged, got, ok)
			}
		}
		for seq, charged := range dv.seen.duplicates {
			dupN++
			got, ok := storedCharge(t, st, dv.id, seq)
			if ok {
				told[fmt.Sprint(dv.id, "/", seq)] = true
			}
			if got != charged {
				t.Errorf("%s seq %d: duplicate says %d, stored %d (stored: %v)", dv.id, seq, charged, got, ok)
			}
		}
		dv.seen.mu.Unlock()
	}
	// Each stored ticket is in the ledger exactly once.
	refs := map[string]int{}
	if err := ledger.New(st, ledger.Config{}).Entries(func(_ string, e metering.Entry) error {
		refs[e.Ref]++
		return nil
	}); err != nil {
		t.Errorf("bad entry: %v", err)
	}
	for ref, n := range refs {
		if n != 1 {
			t.Errorf("ticket %s is in the ledger %d times", ref, n)
		}
	}
	unanswered := 0
	ledger.New(st, ledger.Config{}).Tickets(func(dev string, seq uint64) error {
		if !told[fmt.Sprint(dev, "/", seq)] {
			unanswered++ // committed, receipt lost in the crash, superseded on the device
		}
		return nil
	})
	rc := rep.Reconcile
	t.Logf("%d accepted, %d duplicate answers, %d stored tickets (%d whose receipt died with the daemon and were superseded); %+v",
		acceptedN, dupN, rc.Tickets, unanswered, rc)
	if !rc.Balanced {
		t.Fatalf("books do not balance after the crash: %+v", rc)
	}
	if acceptedN < 100 {
		t.Fatalf("only %d tickets accepted: the load did not run", acceptedN)
	}
	if int(rc.Tickets) != len(told)+unanswered {
		t.Fatalf("stored %d tickets; told %d + unanswered %d", rc.Tickets, len(told), unanswered)
	}
	// The provider got every sealed aggregate once: forwarding was killed
	// in the middle too, and what was sent again was dropped as duplicate.
	rr, err := recv.Report()
	if err != nil {
		t.Fatal(err)
	}
	var got, aggs uint64
	for _, tot := range rr.Totals {
		got, aggs = got+tot.Amount, aggs+tot.Aggregates
	}
	gaps := 0
	for _, g := range rr.Gaps {
		gaps += len(g)
	}
	t.Logf("provider booked %d aggregates (%d resends dropped), %d nanos", aggs, rr.Stats.Duplicates, got)
	if got != uint64(rc.LedgerCharged) || aggs != uint64(len(rep.Sealed)) || gaps != 0 {
		t.Fatalf("provider has %d nanos in %d aggregates (%d gaps); ledger %d in %d sealed", got, aggs, gaps, rc.LedgerCharged, len(rep.Sealed))
	}
}

// swapHandler lets the test install the receiver after the gateway key
// exists.
type swapHandler struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swapHandler) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	if h == nil {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}

func storedCharge(t *testing.T, st *store.Store, device string, seq uint64) (uint64, bool) {
	charged, _, ok := ledger.New(st, ledger.Config{}).StoredTicket(device, seq)
	return charged, ok
}

func rawReceipt(t *testing.T, addr, device string, s registry.Secrets, payload []byte) protocol.Receipt {
	got := make(chan []byte, 1)
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("replay-" + device).SetUsername(device).SetPassword(s.MQTTPassword())
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("replay connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	c.Subscribe("farthing/v1/"+device+"/receipt", 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- m.Payload():
		default:
		}
	}).WaitTimeout(5 * time.Second)
	c.Publish("farthing/v1/"+device+"/ticket", 1, false, payload).WaitTimeout(5 * time.Second)
	select {
	case b := <-got:
		var env protocol.Envelope
		var r protocol.Receipt
		if err := protocol.ParseReceipt(b, &env, &r); err != nil {
			t.Fatal(err)
		}
		rv, _ := s.ReceiptVerifier()
		if err := env.Verify(rv, nil); err != nil {
			t.Fatal(err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt for the replay")
		return protocol.Receipt{}
	}
}
