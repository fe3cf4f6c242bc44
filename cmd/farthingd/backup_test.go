package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// TestBackupUnderLoadKillRestore takes a hot backup while a device sends
// tickets, goes on, kills the daemon with SIGKILL, and restores the
// backup: a restore is refused while the daemon runs and for a damaged
// file; the restored gateway starts a new stream epoch (the provider sees
// a stream reset, no gap); the device's next tickets recover everything it
// used since the backup (cumulative registers); the restored books
// reconcile; the restored gateway announces the restore first in its new
// stream, so the provider's payable total is the restored gateway's
// charges — what the device used — to the nano, and what the old epoch
// sealed after the backup (amounts the audit files hold) is reported as
// superseded_by_restore, never paid twice.
func TestBackupUnderLoadKillRestore(t *testing.T) {
	bin := buildDaemon(t)
	recvAddr := freeAddr(t, "tcp")
	g := newGatewayDir(t, []string{"meter-1"}, "", fmt.Sprintf(`upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, recvAddr))
	pub, _ := makeGatewayKey(t, g.data)
	recv := startReceiverAt(t, recvAddr, pub)
	d := startDaemon(t, bin, g.config, g.mqtt)

	seq := &memSeq{}
	var reg atomic.Uint64
	connect := func() *mqttdev.Device {
		s := g.secrets["meter-1"]
		signer, _ := s.Signer()
		rv, _ := s.ReceiptVerifier()
		c, err := devicefw.New(devicefw.Config{Device: "meter-1", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
			Seq: seq, Pending: make([]byte, 8*protocol.MaxTicketSize)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dev, err := mqttdev.Connect(ctx, mqttdev.Config{Broker: "tcp://" + g.mqtt, Device: "meter-1", Password: s.MQTTPassword(), Client: c})
		if err != nil {
			t.Fatal(err)
		}
		return dev
	}
	dev := connect()
	load := func(n int) {
		for range n {
			dev.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg.Add(10)}})
			time.Sleep(5 * time.Millisecond)
		}
	}
	load(100)
	done := make(chan struct{})
	go func() { defer close(done); load(200) }() // under load
	backup := filepath.Join(t.TempDir(), "state.backup")
	out, err := farthingCLI(t, "backup", backup, "--data", g.data)
	if err != nil || !strings.Contains(out, "sha256") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	<-done
	if out, err := farthingCLI(t, "restore", backup, "--data", g.data); err == nil || !strings.Contains(out, "running") {
		t.Fatalf("restore while the daemon runs: %v\n%s", err, out)
	}
	time.Sleep(1500 * time.Millisecond) // the old epoch seals and forwards past the backup
	d.kill(t)
	dev.Close()

	damaged := backup + ".damaged"
	b, _ := os.ReadFile(backup)
	b[len(b)/2] ^= 1
	os.WriteFile(damaged, b, 0o600)
	sum, _ := os.ReadFile(backup + ".sha256")
	os.WriteFile(damaged+".sha256", sum, 0o600)
	if out, err := farthingCLI(t, "restore", damaged, "--data", g.data); err == nil || !strings.Contains(out, "checksum") {
		t.Fatalf("restore of a damaged backup: %v\n%s", err, out)
	}
	other := t.TempDir()
	makeGatewayKey(t, other)
	if out, err := farthingCLI(t, "restore", backup, "--data", other); err == nil || !strings.Contains(out, "another gateway key") {
		t.Fatalf("restore into a gateway with another key: %v\n%s", err, out)
	}
	out, err = farthingCLI(t, "restore", backup, "--data", g.data)
	if err != nil || !strings.Contains(out, "new stream epoch") || !strings.Contains(out, "the receivers will be told") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	// The killed daemon's journal was replayed into the file it belongs
	// to, which went aside: none is beside the restored file.
	if _, err := os.Stat(filepath.Join(g.data, "state.db.journal")); !os.IsNotExist(err) {
		t.Errorf("the replaced file's journal is still beside the restored one: %v", err)
	}
	var oldEpoch, base uint64
	if _, err := fmt.Sscanf(out[strings.Index(out, "(the backup's was "):], "(the backup's was %x at seq %d)", &oldEpoch, &base); err != nil {
		t.Fatalf("restore's output: %v\n%s", err, out)
	}

	d = startDaemon(t, bin, g.config, g.mqtt)
	dev = connect()
	defer dev.Close()
	load(20) // the device's next tickets carry its registers since the backup
	charged := drained(t, g)
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced {
		t.Fatalf("restored books: %+v", rep.Reconcile)
	}
	// Everything the device used was charged by the restored gateway: 10 Wh
	// a ticket at 0.30 EUR/kWh, from the baseline on.
	if want := (reg.Load() - 10) * 300_000_000 / 1000; charged != want {
		t.Errorf("the restored gateway charged %d; the device used %d nanos' worth", charged, want)
	}

	// The provider: the old epoch up to where it got, a new epoch from 1.
	var oldAfterBackup uint64
	files, _ := filepath.Glob(filepath.Join(g.data, "audit", "audit-*.jsonl"))
	counted := map[uint64]bool{}
	for _, name := range files {
		f, _ := os.Open(name)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() {
			var bu ledger.AuditBundle
			if err := json.Unmarshal(sc.Bytes(), &bu); err != nil {
				t.Fatal(err)
			}
			raw, _ := hex.DecodeString(bu.Aggregate)
			_, agg, err := strict.DecodeAggregate(raw)
			if err == nil && agg.Epoch == oldEpoch && agg.Seq > base && !counted[agg.Seq] {
				counted[agg.Seq] = true
				oldAfterBackup += agg.Amount
			}
		}
		f.Close()
	}
	if oldAfterBackup == 0 {
		t.Fatal("the old epoch sealed nothing after the backup: the test proves nothing")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		prep := recv.report(t)
		var total, superseded uint64
		for _, tt := range prep.Totals {
			total += tt.Amount
		}
		for _, m := range prep.Superseded {
			if m.Kind == "aggregate" {
				superseded += m.Amount
			}
		}
		resets, missing := 0, uint64(0)
		for _, s := range prep.Streams {
			missing += s.Missing
			if s.ResetFrom != nil {
				resets++
			}
		}
		restored := len(prep.Restores) == 1 && prep.Restores[0].After == base
		if total == charged && superseded == oldAfterBackup && restored && resets == 1 && missing == 0 {
			t.Logf("provider: %d nanos payable = the device's usage; %d superseded by the restore", total, superseded)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider total %d, want %d (the device's usage); superseded %d, want %d; restores %+v; %d resets, %d missing; streams %+v",
				total, charged, superseded, oldAfterBackup, prep.Restores, resets, missing, prep.Streams)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Any ticket is proved from the audit files alone, signature included.
	out, err = farthingCLI(t, "proof", "--ticket", "meter-1/5", "--audit", filepath.Join(g.data, "audit"), "--pub", pub)
	var proofs []ledger.Proof
	if err != nil || json.Unmarshal([]byte(out), &proofs) != nil || len(proofs) == 0 || proofs[0].Ticket != "meter-1/5" {
		t.Errorf("proof from the audit files: %v\n%.2000s", err, out)
	}
	// Compaction: refused while the daemon runs; on the stopped gateway it
	// keeps the books as they were.
	if out, err := farthingCLI(t, "compact", "--data", g.data); err == nil || !strings.Contains(out, "running") {
		t.Errorf("compact while the daemon runs: %v\n%s", err, out)
	}
	d.stop(t)
	stopped := func() ledger.ReconcileReport { // the state file itself, read by farthing inspect
		t.Helper()
		out, err := farthingCLI(t, "inspect", "--data", g.data)
		var rep ledger.Report
		if err != nil || json.Unmarshal([]byte(out), &rep) != nil {
			t.Fatalf("inspect: %v\n%s", err, out)
		}
		return rep.Reconcile
	}
	before := stopped()
	if out, err := farthingCLI(t, "compact", "--data", g.data); err != nil || !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %v\n%s", err, out)
	}
	if after := stopped(); !reflect.DeepEqual(after, before) || !after.Balanced {
		t.Errorf("compaction changed the books: %+v → %+v", before, after)
	}
}
