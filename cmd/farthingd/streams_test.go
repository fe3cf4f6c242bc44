package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider"
)

// receiverProc is a `farthing receive --http` process.
type receiverProc struct {
	cmd   *exec.Cmd
	addr  string
	token string // its read token
	out   bytes.Buffer
}

func (r *receiverProc) report(t *testing.T) *provider.Report {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.addr+"/totals", nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep provider.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

// stop ends the receiver with SIGTERM and returns what it printed.
func (r *receiverProc) stop(t *testing.T) string {
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
	return r.out.String()
}

// makeGatewayKey writes a gateway key into the data directory, as the
// daemon would on first start, and returns the public key file.
func makeGatewayKey(t *testing.T, data string) (string, *keyfile.Key) {
	t.Helper()
	k, err := keyfile.GenerateEd25519()
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := k.EncodePrivate()
	pub, _ := k.EncodePublic()
	keyfile.WriteNew(filepath.Join(data, "gateway.key"), priv, 0o600)
	keyfile.WriteNew(filepath.Join(data, "gateway.key.pub"), pub, 0o644)
	return filepath.Join(data, "gateway.key.pub"), k
}

// drained waits until the daemon has sealed and forwarded everything and
// returns what its ledger charged.
func drained(t *testing.T, g *gatewayDir) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep := inspect(t, g.data)
		if rep.Outbox == 0 && len(rep.OpenWindows) == 0 && rep.Reconcile.WindowsLate == 0 && rep.Reconcile.Tickets > 0 {
			if !rep.Reconcile.Balanced {
				t.Fatalf("gateway books do not balance: %+v", rep.Reconcile)
			}
			return uint64(rep.Reconcile.LedgerCharged)
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox %d, open windows %d after 30s; log:\n%s", rep.Outbox, len(rep.OpenWindows), g.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func reportN(t *testing.T, g *gatewayDir, dev string, n int, from uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := dialDevice(ctx, g, dev)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.reg = from
	for i := 0; i < n; i++ {
		if r := d.report(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("%s ticket %d: %+v", dev, i, r)
		}
	}
}

// TestStreamsSharedIDLostStateConflict runs two farthingd with the same
// configured gateway id into one `farthing receive`, then deletes one
// gateway's state file and restarts it, then sends the receiver a validly
// signed aggregate that conflicts with a booked one. Every nano both
// gateways' ledgers charged is booked, the restart is reported as a stream
// reset with the old epoch's last seq, and the conflict is held and
// reported, not booked and not called a duplicate.
func TestStreamsSharedIDLostStateConflict(t *testing.T) {
	bin := buildDaemon(t)
	recvAddr := freeAddr(t, "tcp")
	gws := make([]*gatewayDir, 2)
	pubs := make([]string, 2)
	keys := make([]*keyfile.Key, 2)
	for i, dev := range []string{"plug-a", "plug-b"} {
		gws[i] = newGatewayDir(t, []string{dev}, "", fmt.Sprintf(`gateway_id: gw-raspberrypi
upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, recvAddr))
		pubs[i], keys[i] = makeGatewayKey(t, gws[i].data)
	}
	r := startReceiverAt(t, recvAddr, pubs...)
	var daemons [2]*daemon
	for i, g := range gws {
		daemons[i] = startDaemon(t, bin, g.config, g.mqtt)
	}
	reportN(t, gws[0], "plug-a", 5, 0)
	reportN(t, gws[1], "plug-b", 4, 0)
	charged := drained(t, gws[0]) + drained(t, gws[1])
	firstEpochLast := inspect(t, gws[0].data).Sealed[len(inspect(t, gws[0].data).Sealed)-1].Seq

	// Gateway A loses its state file and starts again with the same key.
	daemons[0].stop(t)
	if err := os.Remove(filepath.Join(gws[0].data, "state.db")); err != nil {
		t.Fatal(err)
	}
	daemons[0] = startDaemon(t, bin, gws[0].config, gws[0].mqtt)
	reportN(t, gws[0], "plug-a", 3, 10_000)
	charged += drained(t, gws[0])
	daemons[0].stop(t)
	daemons[1].stop(t)

	rep := r.report(t)
	var booked uint64
	for _, tot := range rep.Totals {
		booked += tot.Amount
	}
	if booked != charged {
		t.Fatalf("receiver booked %d nanos; the gateways' ledgers charged %d (stats %+v)", booked, charged, rep.Stats)
	}
	if len(rep.Streams) != 3 {
		t.Fatalf("%d streams; want 3 (A's two epochs, B): %+v", len(rep.Streams), rep.Streams)
	}
	resets := 0
	for _, s := range rep.Streams {
		if s.Missing != 0 {
			t.Errorf("stream %s misses %d aggregates", s.Stream, s.Missing)
		}
		if s.ResetFrom != nil {
			resets++
			if s.ResetFrom.LastSeq != firstEpochLast {
				t.Errorf("reset reported the old epoch's last seq %d; want %d", s.ResetFrom.LastSeq, firstEpochLast)
			}
		}
	}
	if resets != 1 {
		t.Fatalf("%d stream resets reported; want 1", resets)
	}

	// A validly signed aggregate with a booked (key, epoch, seq) and other
	// bytes: 409, held, reported, not booked.
	var first provider.StreamReport
	for _, s := range rep.Streams {
		if s.ResetFrom != nil {
			first = s
		}
	}
	signer, _ := protocol.NewEd25519Signer(keys[0].Private)
	forged := protocol.Aggregate{Gateway: "gw-raspberrypi", Seq: 1, Epoch: first.Epoch, Provider: "utility", Account: "fleet",
		Meter: "energy_wh", WindowStart: 1, WindowEnd: 2, Quantity: 1, Amount: 123_456_789, Currency: "EUR", Tickets: 1,
		MerkleRoot: make([]byte, 32)}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &forged, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, _ := strict.DecodeAggregate(b); got.Epoch != first.Epoch {
		t.Fatal("forged aggregate lost its epoch")
	}
	resp, err := http.Post("http://"+r.addr+"/aggregates", "application/cose", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("conflicting aggregate answered %s; want 409 Conflict", resp.Status)
	}
	rep = r.report(t)
	booked = 0
	for _, tot := range rep.Totals {
		booked += tot.Amount
	}
	if booked != charged || len(rep.Held) != 1 || rep.Held[0].Reason != "conflict" || rep.Held[0].Amount != forged.Amount {
		t.Fatalf("after the conflict: booked %d (want %d), held %+v", booked, charged, rep.Held)
	}
	out := r.stop(t)
	for _, want := range []string{"STREAM RESET", "HELD (conflict)", "conflicts held 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("receiver output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, `level=ERROR msg="aggregate held, not booked"`) != 1 {
		t.Errorf("the conflict was not logged once at error level:\n%s", out)
	}
}

// startReceiverAt is startReceiver on a given address.
func startReceiverAt(t *testing.T, addr string, trust ...string) *receiverProc {
	t.Helper()
	return startReceiverOn(t, addr, nil, trust...)
}
