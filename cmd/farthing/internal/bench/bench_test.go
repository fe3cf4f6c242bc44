package bench_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/bench"
)

func TestLimitsMeasureSomething(t *testing.T) {
	v, err := bench.VerifyLimit(200 * time.Millisecond)
	if err != nil || v < 100 {
		t.Fatalf("L1 = %.0f/s, %v", v, err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	stop, err := bench.BareBroker(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	m, err := bench.BrokerLimit(context.Background(), addr, 300*time.Millisecond)
	if err != nil || m < 100 {
		t.Fatalf("L2 = %.0f/s, %v", m, err)
	}
}

func TestReportTableAndPlot(t *testing.T) {
	r := &bench.Report{Host: "h", Cores: 2, Go: "go", L1: bench.Spread{Median: 25000, Min: 24000, Max: 26000},
		L2: map[string]bench.Spread{"embedded": {Median: 13000}},
		E: []bench.EndToEnd{{Name: "embedded broker, HMAC", Throughput: bench.Spread{Median: 2600}, Limit: "E/L2 embedded", Ratio: 0.2},
			{Name: "embedded broker, Ed25519", Throughput: bench.Spread{Median: 2100}, Limit: "E/L1", Ratio: 0.084}}}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"L1 Ed25519", "E/L1 0.08", "embedded broker, HMAC"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	png := filepath.Join(t.TempDir(), "b.png")
	if err := r.WritePlot(png); err != nil {
		t.Fatal(err)
	}
	if head, _ := os.ReadFile(png); len(head) < 8 || string(head[1:4]) != "PNG" {
		t.Fatal("the plot is not a PNG")
	}
}
