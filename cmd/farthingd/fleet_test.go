package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// fleetReport is the part of `farthing sim --fleet --json`'s report this
// test reads (fleetReport).
type fleetReport struct {
	Sent     uint64            `json:"sent"`
	Resent   uint64            `json:"resent"`
	Accepted uint64            `json:"accepted"`
	Held     uint64            `json:"held"`
	Rejected map[string]uint64 `json:"rejected"`
	Pending  int               `json:"pending"`
	Used     uint64            `json:"used_units"`
}

// TestSimFleetAcrossAGatewayKill: `farthing sim --fleet` is a fleet of
// firmware. Its gateway is killed with SIGKILL mid-run and started again:
// the devices reconnect, send what has no final receipt again, and go on;
// a second run goes on from the fleet file (same register epoch, seqs and
// registers on). In the end the gateway charged exactly what the devices'
// registers counted from their first readings — every unit once, none
// twice, none lost — and nothing was refused or held.
func TestSimFleetAcrossAGatewayKill(t *testing.T) {
	t.Parallel() // waits on timers mostly: it runs beside the others of its kind
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"plug-1", "plug-2", "plug-3"}, "", "")
	d := startDaemon(t, bin, g.config, g.mqtt)
	fleet := filepath.Join(t.TempDir(), "fleet.json")
	simRun := func(dur string, fresh bool) *exec.Cmd {
		args := []string{"sim", "--data", g.data, "--broker", "tcp://" + g.mqtt, "--fleet", fleet, "--rate", "30", "--duration", dur, "--json"}
		if fresh {
			args = append(args, "--fresh")
		}
		return exec.Command(built(t, "farthing", "../farthing"), args...)
	}
	report := func(cmd *exec.Cmd, out *bytes.Buffer) fleetReport {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("farthing sim --fleet: %v\n%s", err, out)
		}
		var rep fleetReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("the fleet's report: %v\n%s", err, out)
		}
		if rep.Pending != 0 || len(rep.Rejected) != 0 || rep.Held != 0 {
			t.Fatalf("the fleet's report %+v; want every ticket answered, none refused or held", rep)
		}
		return rep
	}

	var out bytes.Buffer
	cmd := simRun("8s", true)
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	d.kill(t)
	time.Sleep(1500 * time.Millisecond) // an outage
	d = startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	first := report(cmd, &out)
	const perUnit = 300_000 // 0.30 EUR a kWh: nanos per Wh
	if charged := chargedBy(t, g); first.Used == 0 || charged != first.Used*perUnit {
		t.Fatalf("the gateway charged %d; the registers counted %d Wh (%d nanos) since the first readings", charged, first.Used, first.Used*perUnit)
	}
	if first.Resent == 0 {
		t.Logf("no ticket had to be sent again: the kill fell between tickets (%+v)", first)
	}

	out.Reset()
	cmd = simRun("2s", false)
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	second := report(cmd, &out)
	if second.Used <= first.Used {
		t.Fatalf("the second run's registers: %d, after %d; want them going on", second.Used, first.Used)
	}
	if charged := chargedBy(t, g); charged != second.Used*perUnit {
		t.Fatalf("after the second run the gateway charged %d; the registers counted %d Wh (%d nanos)", charged, second.Used, second.Used*perUnit)
	}
	t.Logf("first run %+v; second %+v", first, second)
}

// chargedBy is what the gateway's ledger charged, once its books balance.
func chargedBy(t *testing.T, g *gatewayDir) uint64 {
	t.Helper()
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced {
		t.Fatalf("gateway books do not balance: %+v", rep.Reconcile)
	}
	return uint64(rep.Reconcile.LedgerCharged)
}

// TestSimFleetAcrossARestore: the fleet runs while its gateway is backed
// up hot, killed with SIGKILL and restored from the backup; the devices
// reconnect and go on. The restored gateway charges, from the backup's
// registers, everything the devices used since — some of which the lost
// gateway had sealed and forwarded already — and announces the restore,
// so the provider's payable books equal what the devices' registers
// counted, to the nano, and the rest is reported as superseded.
func TestSimFleetAcrossARestore(t *testing.T) {
	t.Parallel() // waits on timers mostly: it runs beside the others of its kind
	bin := buildDaemon(t)
	recvAddr := freeAddr(t, "tcp")
	g := newGatewayDir(t, []string{"plug-1", "plug-2", "plug-3"}, "", fmt.Sprintf(`upstreams:
  - {name: provider, type: http, url: "http://%s/aggregates"}
forward: {backoff_min: 20ms, backoff_max: 200ms}
`, recvAddr))
	pub, _ := makeGatewayKey(t, g.data)
	recv := startReceiverAt(t, recvAddr, pub)
	d := startDaemon(t, bin, g.config, g.mqtt)
	fleet := filepath.Join(t.TempDir(), "fleet.json")
	var out bytes.Buffer
	cmd := exec.Command(built(t, "farthing", "../farthing"), "sim", "--data", g.data, "--broker", "tcp://"+g.mqtt, "--fleet", fleet,
		"--fresh", "--rate", "30", "--duration", "10s", "--json")
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	backup := filepath.Join(t.TempDir(), "state.backup")
	if b, err := farthingCLI(t, "backup", backup, "--data", g.data); err != nil {
		t.Fatalf("backup: %v\n%s", err, b)
	}
	time.Sleep(3 * time.Second) // the lost gateway seals and forwards past the backup
	d.kill(t)
	if b, err := farthingCLI(t, "restore", backup, "--data", g.data); err != nil {
		t.Fatalf("restore: %v\n%s", err, b)
	}
	d = startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("farthing sim --fleet: %v\n%s", err, out.String())
	}
	var rep fleetReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Pending != 0 || len(rep.Rejected) != 0 || rep.Held != 0 || rep.Used == 0 {
		t.Fatalf("the fleet's report %+v (%v)", rep, err)
	}
	const perUnit = 300_000
	if charged := drained(t, g); charged != rep.Used*perUnit {
		t.Fatalf("the restored gateway charged %d; the registers counted %d Wh (%d nanos)", charged, rep.Used, rep.Used*perUnit)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		prep := recv.report(t)
		var payable, superseded uint64
		for _, tt := range prep.Totals {
			payable += tt.Amount
		}
		for _, m := range prep.Superseded {
			superseded += m.Amount
		}
		if payable == rep.Used*perUnit && len(prep.Restores) == 1 {
			t.Logf("provider: %d nanos payable = the registers' count; %d superseded by the restore", payable, superseded)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider payable %d, want %d; superseded %d; restores %+v", payable, rep.Used*perUnit, superseded, prep.Restores)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
