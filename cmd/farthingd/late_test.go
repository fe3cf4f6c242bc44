package main

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
)

// TestBacklogIsFoldedNotOneCorrectionPerTicket: a device comes back after
// three hours offline with 2,000 tickets dated over those hours, while
// another device of its account kept the account's 10 s windows going.
// Every one of its tickets falls in a sealed window: they are charged
// once each, and go upstream as at most one correction per window they
// touched (corrections.fold gathers them), not one per ticket; the
// gateway logs the late usage with its oldest lateness and counts it, and
// the books reconcile, the late line included until the folds seal.
func TestBacklogIsFoldedNotOneCorrectionPerTicket(t *testing.T) {
	t.Parallel() // waits on timers mostly: it runs beside the others of its kind
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1", "meter-2"}, "", "corrections: {fold: 2s}\n")
	b, _ := os.ReadFile(g.config)
	os.WriteFile(g.config, []byte(strings.Replace(string(b), `window: 1s, threshold: "0.05 EUR"`, "window: 10s", 1)), 0o600)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	live, err := dialDevice(ctx, g, "meter-1")
	back, err2 := dialDevice(ctx, g, "meter-2")
	cancel()
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	defer live.Close()
	defer back.Close()
	now := time.Now()
	// The live device's windows: the one 30 s ago seals when the next one
	// opens, so everything before it is late from now on.
	for _, at := range []time.Time{now.Add(-40 * time.Second), now.Add(-30 * time.Second), now} {
		if r := live.sendAt(t, live.reg+1000, at); r.Status != protocol.StatusAccepted {
			t.Fatalf("live device: %+v", r)
		}
	}
	const backlog = 2000
	start := now.Add(-3 * time.Hour)
	if r := back.sendAt(t, 1_000, start); r.Status != protocol.StatusAccepted { // its baseline
		t.Fatalf("baseline: %+v", r)
	}
	slots := map[int64]bool{}
	var charged uint64
	for i := 1; i <= backlog; i++ {
		at := start.Add(time.Duration(i) * (3*time.Hour - time.Minute) / backlog)
		slots[at.UnixMilli()/10_000] = true
		r := back.sendAt(t, uint64(1_000+i), at)
		if r.Status != protocol.StatusAccepted || r.Charged != 300_000 {
			t.Fatalf("backlog ticket %d: %+v; want accepted, 1 Wh charged", i, r)
		}
		charged += r.Charged
	}
	if rep := inspect(t, g.data); !rep.Reconcile.Balanced || rep.Reconcile.WindowsLate == 0 {
		t.Errorf("books before the folds seal: %+v; want balanced, with a late line", rep.Reconcile)
	}
	var m string
	deadline := time.Now().Add(20 * time.Second)
	for {
		m = httpText(t, "http://"+g.http+"/metrics")
		if metricValue(m, "farthing_late_tickets_total") == backlog {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("farthing_late_tickets_total = %v; want %d", metricValue(m, "farthing_late_tickets_total"), backlog)
		}
		time.Sleep(200 * time.Millisecond)
	}
	corrections := metricValue(m, `farthing_windows_sealed_total{reason="correction"}`)
	t.Logf("%d late tickets over %d windows: %v corrections", backlog, len(slots), corrections)
	if corrections < 1 || corrections > float64(len(slots)) {
		t.Errorf("%v corrections for %d late tickets over %d windows; want at most one per window", corrections, backlog, len(slots))
	}
	rep := inspect(t, g.data)
	if !rep.Reconcile.Balanced || rep.Reconcile.WindowsLate != 0 {
		t.Errorf("books after the folds sealed: %+v", rep.Reconcile)
	}
	if log := g.logText(); !strings.Contains(log, "late usage folded into corrections") || !strings.Contains(log, "oldest_late=2h59m") {
		t.Errorf("no log line for the late usage with its oldest lateness:\n%s", tail(log, 20))
	}
}

// metricValue is the value of one series (a name, or a name with its
// labels) on a /metrics page; -1 if it is not there.
func metricValue(page, series string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
