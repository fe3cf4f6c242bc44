package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/provider/pgbooks"
)

// natsJS runs a real nats-server with JetStream on a free port.
type natsJS struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func (n *natsJS) start(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatal("nats-server is not installed; scripts/test.sh installs it")
	}
	n.cmd = exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-sd", n.dir)
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

func (n *natsJS) kill() {
	if n.cmd != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
		n.cmd = nil
	}
}

// dbReceiver is a `farthing receive --jetstream --db` process.
type dbReceiver struct {
	cmd     *exec.Cmd
	out     bytes.Buffer
	metrics string
}

func startDBReceiver(t *testing.T, natsURL, db string, trust ...string) *dbReceiver {
	t.Helper()
	r := &dbReceiver{metrics: freeAddr(t, "tcp")}
	args := []string{"receive", "--jetstream", natsURL, "--durable", "provider", "--db", db, "--db-max-conns", "4",
		"--metrics", r.metrics, "--every", "1h"}
	for _, f := range trust {
		args = append(args, "--trust", f)
	}
	r.cmd = exec.Command(built(t, "farthing", "../farthing"), args...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
	if !listening(r.metrics, 10*time.Second) {
		t.Fatalf("farthing receive --db did not start: %s", r.out.String())
	}
	return r
}

// TestThreeReceiversOnePostgres: a gateway forwards to JetStream; three
// `farthing receive` processes share one durable consumer and one
// PostgreSQL database. Under load one receiver is killed with SIGKILL and
// started again, the database is restarted, and the nats-server is
// restarted; in the end the database's books equal the gateway's ledger to
// the nano, with no gap and nothing booked twice, and a receiver's
// /healthz said 503 while the database was down.
func TestThreeReceiversOnePostgres(t *testing.T) {
	cluster := postgres(t)
	db, err := cluster.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, portStr, _ := net.SplitHostPort(freeAddr(t, "tcp"))
	port, _ := strconv.Atoi(portStr)
	ns := &natsJS{port: port, dir: t.TempDir()}
	ns.start(t)
	defer ns.kill()
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1", "meter-2"}, "", fmt.Sprintf(`upstreams:
  - {name: js, type: jetstream, url: "nats://127.0.0.1:%d", create_stream: true}
forward: {drain_rate: 1000, backoff_min: 50ms, backoff_max: 500ms}
`, ns.port))
	pub, _ := makeGatewayKey(t, g.data)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
	var rs [3]*dbReceiver
	for i := range rs {
		rs[i] = startDBReceiver(t, natsURL, db, pub)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	devs := make([]*testDevice, 2)
	for i, id := range []string{"meter-1", "meter-2"} {
		if devs[i], err = dialDevice(ctx, g, id); err != nil {
			t.Fatal(err)
		}
		defer devs[i].Close()
	}
	cancel()
	load := func(n int) {
		for range n {
			for _, dv := range devs {
				if r := dv.report(t); r.Status != 0 {
					t.Fatalf("ticket: %+v", r)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	load(40)
	rs[1].cmd.Process.Signal(syscall.SIGKILL) // a receiver dies mid-stream
	rs[1].cmd.Wait()
	load(40)
	rs[1] = startDBReceiver(t, natsURL, db, pub)
	load(20)
	if err := cluster.StopServer(); err != nil { // the database goes down under load
		t.Fatal(err)
	}
	load(20)
	healthDown := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !healthDown; time.Sleep(100 * time.Millisecond) {
		code, _ := httpStatus("http://" + rs[0].metrics + "/healthz")
		healthDown = code == 503
	}
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	load(20)
	ns.kill() // and the NATS server restarts
	load(20)
	ns.start(t)
	load(20)

	charged := drained(t, g)
	sealed := uint64(len(inspect(t, g.data).Sealed))
	check, err := pgbooks.Open(context.Background(), db, nil, pgbooks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err := check.Report()
		if err != nil {
			t.Fatal(err)
		}
		var amount, aggs, missing uint64
		for _, tt := range rep.Totals {
			amount += tt.Amount
			aggs += tt.Aggregates
		}
		for _, s := range rep.Streams {
			missing += s.Missing
		}
		if amount == charged && aggs == sealed && missing == 0 && len(rep.Held) == 0 {
			t.Logf("the database booked %d nanos in %d aggregates, the gateway's ledger charged %d in %d", amount, aggs, charged, sealed)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database: %d nanos in %d aggregates, %d missing, %d held; ledger %d in %d\n%s", amount, aggs, missing,
				len(rep.Held), charged, sealed, rs[0].out.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !healthDown {
		t.Error("/healthz never said 503 while the database was down")
	}
	if code, _ := httpStatus("http://" + rs[0].metrics + "/metrics"); code != 200 {
		t.Errorf("/metrics: %d", code)
	}
}

func httpStatus(url string) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
