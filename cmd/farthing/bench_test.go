package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/internal/bench"
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
	out := mustRun(t, nil, "bench", "--runs", "1", "--duration", "1s", "--devices", "5", "--offered", "2000",
		"--registered", "500", "--connected", "50", "--json", js)
	for _, want := range []string{"L1 Ed25519", "L2 embedded", "embedded broker, HMAC", "embedded broker, Ed25519", "CoAP/DTLS, HMAC", "MEMORY"} {
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
	if rep.L1.Median <= 0 || rep.L2["embedded"].Median <= 0 {
		t.Fatalf("limits not measured: %+v %+v", rep.L1, rep.L2)
	}
	for _, e := range rep.E {
		if e.Throughput.Median <= 0 || e.Missing != 0 || e.AtHalf.P99 <= 0 || e.Ratio <= 0 {
			t.Errorf("%s: %+v", e.Name, e)
		}
	}
	if len(rep.Memory) == 0 {
		t.Fatal("no memory figure")
	}
	for _, m := range rep.Memory {
		if m.Registered != 500 || m.Connected != 50 || m.Sent == 0 || m.Missing != 0 || m.RSSMB <= 0 || m.AnonMB <= 0 || m.AnonMB > m.RSSMB || m.SettledMB <= 0 {
			t.Errorf("memory figure %+v", m)
		}
	}
}
