package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/bench"
)

// TestMain lets the test binary stand in for the farthing command: the
// bench runs its load generator as `os.Executable() sim ...`.
func TestMain(m *testing.M) {
	if os.Getenv("FARTHING_TEST_AS_CLI") == "1" {
		os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
	}
	os.Exit(m.Run())
}

// A small whole run of farthing bench: every figure is measured, with the
// simulator in its own process, and the memory figure has the fleet it
// was asked for with every receipt back.
func TestBenchRunsToItsTable(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole bench run takes about half a minute")
	}
	t.Setenv("FARTHING_TEST_AS_CLI", "1")
	js := filepath.Join(t.TempDir(), "bench.json")
	out := mustRun(t, nil, "bench", "--runs", "1", "--duration", "1s", "--half-duration", "2s", "--devices", "5", "--offered", "2000",
		"--registered", "500", "--connected", "50", "--sessions", "20", "--wear-duration", "2s", "--json", js)
	for _, want := range []string{"L1 Ed25519", "L2 embedded", "L3 bare CoAP/DTLS", "embedded broker, HMAC", "embedded broker, Ed25519", "CoAP/DTLS, HMAC", "MEMORY", "WEAR"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.L1.Median <= 0 || rep.L2["embedded"].Median <= 0 || rep.L3.Median <= 0 {
		t.Fatalf("limits not measured: %+v %+v %+v", rep.L1, rep.L2, rep.L3)
	}
	for _, e := range rep.E {
		if e.Throughput.Median <= 0 || e.Missing != 0 || e.AtHalf.P99 <= 0 || e.Ratio <= 0 || e.CPUPerTicket <= 0 || e.Devices != 5 {
			t.Errorf("%s: %+v", e.Name, e)
		}
	}
	// The wear rows: every one accepted tickets, and each of them cost
	// the disk bytes and fsyncs (the journal's at least).
	if len(rep.Wear) != 5 {
		t.Fatalf("wear rows: %+v", rep.Wear)
	}
	for _, w := range rep.Wear {
		if w.Tickets == 0 || w.BytesPerTicket <= 0 || w.SyncsPerTicket <= 0 || w.WriteRate <= 0 {
			t.Errorf("wear %s: %+v", w.Name, w)
		}
	}
	if len(rep.Memory) < 2 {
		t.Fatalf("memory figures: %+v", rep.Memory)
	}
	for _, m := range rep.Memory {
		want := 50
		if strings.HasPrefix(m.Name, "CoAP") {
			want = 20
		}
		if m.Registered != 500 || m.Connected != want || m.Sent == 0 || m.Missing != 0 || m.RSSMB <= 0 || m.AnonMB <= 0 || m.AnonMB > m.RSSMB || m.SettledMB <= 0 {
			t.Errorf("memory figure %+v", m)
		}
	}
}

// --only runs the parts asked for and nothing else; an unknown part is a
// usage error.
func TestBenchOnly(t *testing.T) {
	t.Setenv("FARTHING_TEST_AS_CLI", "1")
	js := filepath.Join(t.TempDir(), "bench.json")
	mustRun(t, nil, "bench", "--only", "l1", "--runs", "1", "--json", js)
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.L1.Median <= 0 || len(rep.L2) != 0 || rep.L3.Median != 0 || len(rep.E) != 0 || len(rep.Memory) != 0 {
		t.Fatalf("--only l1 ran more or less: %+v", rep)
	}
	if code, _, out := farthing(t, nil, "bench", "--only", "l9"); code != 2 || !strings.Contains(out, "want some of") {
		t.Fatalf("--only l9: exit %d, %s", code, out)
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string][2]int{"4": {4, 4}, "1-4": {1, 4}, "2-2": {2, 2}} {
		lo, hi, err := parseRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("parseRange(%q) = %d, %d, %v", in, lo, hi, err)
		}
	}
	for _, in := range []string{"", "0", "4-1", "a-b", "1-", "-3"} {
		if _, _, err := parseRange(in); err == nil {
			t.Errorf("parseRange(%q) accepted", in)
		}
	}
}
