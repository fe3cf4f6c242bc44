package main

import (
	"bytes"
	"encoding/json"
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
