package gateway_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
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
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/provider/jsrecv"
	"github.com/farthing-iot/farthing/provider/mqttrecv"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// natsServer runs a real nats-server with JetStream on a loopback port.
type natsServer struct {
	port, cluster int
	dir, name     string
	routes        string
	cmd           *exec.Cmd
}

func natsBin(t testing.TB) string {
	for _, p := range []string{"nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("nats-server is not installed; scripts/test.sh installs it (apt-get install -y nats-server)")
	}
	t.Skip("nats-server is not installed; run scripts/test.sh, which installs it")
	return ""
}

func (n *natsServer) start(t testing.TB) {
	args := []string{"-js", "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-sd", n.dir}
	if n.cluster != 0 {
		args = append(args, "-n", n.name, "--cluster_name", "farthing", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", n.cluster), "--routes", n.routes)
	}
	n.cmd = exec.Command(natsBin(t), args...)
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("nats-server did not start")
}

func (n *natsServer) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
		n.cmd = nil
	}
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func gatewayPub(t testing.TB, tg *testGateway) ed25519.PublicKey {
	k, err := keyfile.Load(tg.cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return k.Private.Public().(ed25519.PublicKey)
}

// books is what receivers sharing the work booked together: amounts,
// aggregates, and the seqs below the highest that none of them has.
func books(t *testing.T, rs ...*provider.Receiver) (amount, aggregates uint64, gaps int) {
	high := map[string]uint64{}
	var reps []*provider.Report
	for _, r := range rs {
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
		for _, tot := range rep.Totals {
			amount += tot.Amount
			aggregates += tot.Aggregates
		}
		for gw, h := range rep.High {
			high[gw] = max(high[gw], h)
		}
	}
	for gw, h := range high {
		for seq := uint64(1); seq <= h; seq++ {
			has := false
			for _, rep := range reps {
				missing := false
				for _, g := range rep.Gaps[gw] {
					missing = missing || g == seq
				}
				has = has || (seq <= rep.High[gw] && !missing)
			}
			if !has {
				gaps++
			}
		}
	}
	return
}

// TestUpstreamsDeliverEveryAggregateOnce: sealed aggregates go to
// JetStream (two receivers share one durable consumer) and to an HTTP
// receiver; the NATS server is killed under load and comes back; in the end
// each receiver's books equal the gateway's ledger to the nano, with no
// gaps and no aggregate booked twice.
func TestUpstreamsDeliverEveryAggregateOnce(t *testing.T) {
	ns := &natsServer{port: freeTCP(t), dir: t.TempDir()}
	ns.start(t)
	defer ns.kill()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	httpRecv, err := provider.Open(filepath.Join(t.TempDir(), "http.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer httpRecv.Close()
	srv := httptest.NewServer(nil)
	defer srv.Close()

	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}, {"evse-1", "ed25519", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 300 * time.Millisecond}}
		c.Upstreams = []gateway.UpstreamConfig{
			{Name: "js", Type: "jetstream", URL: ns.url(), CreateStream: true},
			{Name: "http", Type: "http", URL: srv.URL + "/aggregates"},
		}
		c.Forward = gateway.ForwardSettings{DrainRate: 1000, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	})
	pub := gatewayPub(t, tg)
	// The HTTP receiver trusts the gateway key, which exists only now.
	httpRecv.Close()
	httpRecv, _ = provider.Open(filepath.Join(t.TempDir(), "http2.db"), provider.Keys(pub))
	srv.Config.Handler = httpRecv.Handler(log, provider.ReadAccess{})

	var js []*provider.Receiver
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		r, err := provider.Open(filepath.Join(t.TempDir(), fmt.Sprintf("js%d.db", i)), provider.Keys(pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		js = append(js, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			jsrecv.Run(ctx, r, jsrecv.Config{URL: ns.url(), Stream: "FARTHING", Durable: "provider", Log: log})
		}()
	}
	defer func() { cancel(); wg.Wait() }()

	// Load with an uplink outage in the middle.
	devs := []*device{connectDevice(t, tg, "plug-1"), connectDevice(t, tg, "evse-1")}
	reg := uint64(0)
	report := func(n int) {
		for i := 0; i < n; i++ {
			reg += 17
			for _, d := range devs {
				d.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg}})
				d.next(t)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	report(60)
	ns.kill()
	report(150) // windows keep sealing while the uplink is down
	ns.start(t)
	report(60)
	if err := tg.CloseWindows(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rep, _ := tg.Books().Inspect(nil)
	debited := uint64(rep.Reconcile.LedgerCharged)
	sealed := uint64(len(rep.Sealed))
	if !rep.Reconcile.Balanced || rep.Reconcile.WindowsOpen != 0 || sealed < 5 {
		t.Fatalf("gateway books: %+v, %d sealed", rep.Reconcile, sealed)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ja, jn, jg := books(t, js...)
		ha, hn, hg := books(t, httpRecv)
		if ja == debited && jn == sealed && ha == debited && hn == sealed {
			if jg != 0 || hg != 0 {
				t.Fatalf("gaps: jetstream %d, http %d", jg, hg)
			}
			st := js[0].Stats()
			st2 := js[1].Stats()
			t.Logf("ledger %d nanos in %d aggregates; jetstream receivers booked %d + %d, http %d", debited, sealed, st.Accepted, st2.Accepted, httpRecv.Stats().Accepted)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: ledger %d in %d aggregates; jetstream %d in %d; http %d in %d", debited, sealed, ja, jn, ha, hn)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The outbox empties once both upstreams confirmed everything.
	for time.Now().Before(deadline) {
		rep, _ = tg.Books().Inspect(nil)
		if rep.Outbox == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("outbox still holds %d aggregates", rep.Outbox)
}

// TestMQTTUpstreamAndReceiverRestart: aggregates go through a real
// Mosquitto to a receiver with a persistent session; the receiver is
// stopped while windows keep sealing and started again on its file; the
// broker kept what it missed; in the end its books equal the ledger.
func TestMQTTUpstreamAndReceiverRestart(t *testing.T) {
	m := startMosquitto(t, map[string]string{"farthingd": "gw-pw", "receiver": "rcv-pw"})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 200 * time.Millisecond}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "mq", Type: "mqtt", URL: "tcp://" + m.addr, Username: "farthingd", Password: "gw-pw"}}
		c.Forward = gateway.ForwardSettings{DrainRate: 1000, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	})
	pub := gatewayPub(t, tg)
	dbPath := filepath.Join(t.TempDir(), "receiver.db")
	startReceiver := func() (*provider.Receiver, func()) {
		r, err := provider.Open(dbPath, provider.Keys(pub))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			mqttrecv.Run(ctx, r, mqttrecv.Config{Broker: "tcp://" + m.addr, ClientID: "provider-receiver", Username: "receiver", Password: "rcv-pw", Log: log})
		}()
		return r, func() { cancel(); <-done; r.Close() }
	}
	r, stopR := startReceiver()
	d := connectDevice(t, tg, "plug-1")
	reg := uint64(0)
	report := func(n int) {
		for i := 0; i < n; i++ {
			reg += 11
			d.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg}})
			d.next(t)
			time.Sleep(3 * time.Millisecond)
		}
	}
	report(100)
	time.Sleep(300 * time.Millisecond)
	stopR() // the receiver goes away; its session stays at the broker
	report(150)
	r, stopR = startReceiver()
	defer stopR()
	report(50)
	tg.CloseWindows(context.Background(), time.Now().Add(time.Hour))
	rep, _ := tg.Books().Inspect(nil)
	debited, sealed := uint64(rep.Reconcile.LedgerCharged), uint64(len(rep.Sealed))
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, n, gaps := books(t, r)
		if a == debited && n == sealed && gaps == 0 {
			t.Logf("receiver booked %d aggregates, %d nanos, across a restart", n, a)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the receiver has %d in %d aggregates (%d gaps); ledger %d in %d", a, n, gaps, debited, sealed)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestJetStreamClusterNodeKilled: a 3-node JetStream cluster with an R3
// stream; one node is killed while aggregates flow; the receiver's books
// still equal the ledger, every aggregate once.
func TestJetStreamClusterNodeKilled(t *testing.T) {
	natsBin(t)
	var nodes []*natsServer
	var routes []string
	for i := 0; i < 3; i++ {
		n := &natsServer{port: freeTCP(t), cluster: freeTCP(t), dir: t.TempDir(), name: fmt.Sprintf("n%d", i+1)}
		nodes = append(nodes, n)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.cluster))
	}
	var seeds []string
	for _, n := range nodes {
		n.routes = strings.Join(routes, ",")
		n.start(t)
		defer n.kill()
		seeds = append(seeds, n.url())
	}
	url := strings.Join(seeds, ",")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 200 * time.Millisecond}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "js", Type: "jetstream", URL: url, CreateStream: true, Replicas: 3}}
		c.Forward = gateway.ForwardSettings{DrainRate: 1000, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	})
	r, err := provider.Open(filepath.Join(t.TempDir(), "r.db"), provider.Keys(gatewayPub(t, tg)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		jsrecv.Run(ctx, r, jsrecv.Config{URL: url, Stream: "FARTHING", Durable: "provider", Log: log})
	}()
	defer func() { cancel(); <-done }()

	d := connectDevice(t, tg, "plug-1")
	reg := uint64(0)
	report := func(n int) {
		for i := 0; i < n; i++ {
			reg += 13
			d.Report(now(), []devicefw.Reading{{Meter: 0, Register: reg}})
			d.next(t)
			time.Sleep(3 * time.Millisecond)
		}
	}
	report(150)
	nodes[0].kill()
	t.Log("killed node n1")
	report(200)
	tg.CloseWindows(context.Background(), time.Now().Add(time.Hour))
	rep, _ := tg.Books().Inspect(nil)
	debited, sealed := uint64(rep.Reconcile.LedgerCharged), uint64(len(rep.Sealed))
	deadline := time.Now().Add(90 * time.Second)
	for {
		a, n, gaps := books(t, r)
		if a == debited && n == sealed && gaps == 0 {
			t.Logf("%d aggregates, %d nanos, through a cluster that lost a node (%d resends dropped)", n, a, r.Stats().Duplicates)
			return
		}
		if time.Now().After(deadline) {
			ir, _ := tg.Books().Inspect(nil)
			t.Fatalf("after 90s: receiver %d in %d aggregates (%d gaps); ledger %d in %d; outbox %d", a, n, gaps, debited, sealed, ir.Outbox)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestInclusionProofs: for tickets in sealed windows and in a correction,
// the proof checks against the root of the signed aggregate a provider
// holds, with the ticket's own bytes.
func TestInclusionProofs(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}, {"plug-2", "ed25519", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Hour}}
	})
	sent := map[string][]byte{}
	var mu sync.Mutex
	for _, id := range []string{"plug-1", "plug-2"} {
		for i := uint64(1); i <= 40; i++ {
			signer, _ := tg.secrets[id].Signer()
			var enc protocol.Encoder
			b, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: id, Seq: i, Time: now(),
				Readings: []protocol.Reading{{Meter: "energy_wh", Register: 10 * i}, {Meter: "on_ms", Register: 1000 * i}}}, signer)
			mu.Lock()
			sent[fmt.Sprintf("%s/%d", id, i)] = b
			mu.Unlock()
			rc, err := connectRaw(t, tg, id, tg.secrets[id].MQTTPassword())
			if err != nil {
				t.Fatal(err)
			}
			rc.publish(t, id, b)
			rc.receipt(t, tg)
			rc.Disconnect(50)
		}
	}
	if err := tg.CloseWindows(context.Background(), time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for ref, raw := range sent {
		var dev string
		var seq uint64
		fmt.Sscanf(strings.Replace(ref, "/", " ", 1), "%s %d", &dev, &seq)
		ps, err := tg.Books().TicketProofs(dev, seq)
		if seq == 1 {
			if err == nil {
				t.Errorf("%s: a baseline reading has a proof", ref)
			}
			continue
		}
		if err != nil || len(ps) != 2 {
			t.Fatalf("%s: %d proofs, %v; want one per meter", ref, len(ps), err)
		}
		for _, p := range ps {
			h := metering.TicketHash(raw)
			root, _ := hex.DecodeString(p.Root)
			var path []metering.Hash
			for _, s := range p.Path {
				b, _ := hex.DecodeString(s)
				var x metering.Hash
				copy(x[:], b)
				path = append(path, x)
			}
			var r metering.Hash
			copy(r[:], root)
			if err := metering.VerifyInclusion(r, h, p.Index, p.Tickets, path); err != nil || p.Ticket != ref {
				t.Fatalf("%s: proof %+v does not verify: %v", ref, p, err)
			}
			checked++
		}
	}
	if checked != 2*2*39 {
		t.Fatalf("checked %d proofs", checked)
	}
	if _, err := tg.Books().TicketProofs("plug-1", 999); !errors.Is(err, ledger.ErrNoProof) {
		t.Fatalf("proof of an unknown ticket: %v", err)
	}
}

// TestTicketsPrunedAfterConfirmationAndRetention: raw tickets go once every
// upstream confirmed their aggregates and the retention passed; the books
// stay; what is not confirmed stays whole.
func TestTicketsPrunedAfterConfirmationAndRetention(t *testing.T) {
	var srv *httptest.Server
	recvOK := make(chan bool, 1)
	recvOK <- false
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := <-recvOK
		recvOK <- ok
		if !ok {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Hour}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: srv.URL}}
		c.Forward = gateway.ForwardSettings{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	})
	d := connectDevice(t, tg, "plug-1")
	for i := uint64(0); i < 30; i++ {
		d.Report(now(), []devicefw.Reading{{Meter: 0, Register: i * 5}, {Meter: 1, Register: i * 100}})
		d.next(t)
	}
	tg.CloseWindows(context.Background(), time.Now().Add(2*time.Hour))
	// count is the number of tickets whose bytes are still kept.
	count := func() (tickets int) {
		for seq := uint64(1); seq <= 30; seq++ {
			if _, raw, ok := tg.Books().StoredTicket("plug-1", seq); ok && raw != nil {
				tickets++
			}
		}
		return
	}
	// Unconfirmed: nothing goes, however old.
	if n, _ := tg.Ingest().Books().PruneTickets(context.Background(), []string{"h"}, 0, time.Now().Add(3*time.Hour)); n != 0 || count() != 30 {
		t.Fatalf("pruned %d aggregates before any confirmation; %d tickets left", n, count())
	}
	<-recvOK
	recvOK <- true // the upstream comes up and confirms everything
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, _ := tg.Books().Inspect(nil)
		if rep.Outbox == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still %d", rep.Outbox)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Confirmed but within retention: kept.
	if n, _ := tg.Ingest().Books().PruneTickets(context.Background(), []string{"h"}, 24*time.Hour, time.Now()); n != 0 || count() != 30 {
		t.Fatalf("pruned %d within retention; %d tickets left", n, count())
	}
	before, _ := tg.Books().Inspect(nil)
	n, err := tg.Ingest().Books().PruneTickets(context.Background(), []string{"h"}, time.Hour, time.Now().Add(4*time.Hour))
	if err != nil || n == 0 || count() != 1 { // the baseline ticket is in no aggregate
		t.Fatalf("after retention: pruned %d (%v); %d tickets left; want only the baseline", n, err, count())
	}
	after, _ := tg.Books().Inspect(nil)
	if !reflect.DeepEqual(after.Reconcile, before.Reconcile) {
		t.Fatalf("pruning changed the books: %+v → %+v", before.Reconcile, after.Reconcile)
	}
	if _, err := tg.Books().TicketProofs("plug-1", 5); !errors.Is(err, ledger.ErrNoProof) {
		t.Fatalf("proof of a pruned ticket: %v", err)
	}
}

// TestOldestUnforwardedMetric: the gauge shows the age of what waits in
// the outbox, and zero once it drained.
func TestOldestUnforwardedMetric(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 100 * time.Millisecond}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: "http://127.0.0.1:1/unreachable"}}
		c.Forward = gateway.ForwardSettings{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	})
	d := connectDevice(t, tg, "plug-1")
	for i := uint64(0); i < 3; i++ {
		d.Report(now(), []devicefw.Reading{{Meter: 0, Register: i}})
		d.next(t)
	}
	// The housekeeping timer seals the window; the upstream is unreachable.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
		if strings.Contains(m, "farthing_oldest_unforwarded_seconds") && !strings.Contains(m, "farthing_oldest_unforwarded_seconds 0\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the oldest-unforwarded gauge stayed 0 with an aggregate waiting")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
