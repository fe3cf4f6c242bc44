package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/internal/bench"
)

// runBench measures the gateway against this machine's limits.
func runBench(e *env, args []string) error {
	fs := newFlags("bench")
	runs := fs.Int("runs", 3, "saturating runs per figure (the median is reported)")
	dur := fs.Duration("duration", 3*time.Second, "length of each run")
	devices := fs.Int("devices", 50, "simulated devices per key type")
	offered := fs.Float64("offered", 30000, "tickets/s offered to find the maximum")
	registered := fs.Int("registered", 100_000, "devices registered for the memory figure")
	connected := fs.Int("connected", 10_000, "devices connected for the memory figure (0: skip it)")
	jsonPath := fs.String("json", "", "also write the report as JSON to FILE")
	plotPath := fs.String("plot", "", "also draw a PNG chart to FILE")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *connected == 0 {
		*connected = -1 // skip
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, bench.Options{Runs: *runs, Duration: *dur, Devices: *devices, Offered: *offered,
		Registered: *registered, Connected: *connected, Out: e.stderr})
	if err != nil {
		return err
	}
	if err := rep.WriteTable(e.stdout); err != nil {
		return err
	}
	if *jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *plotPath != "" {
		return rep.WritePlot(*plotPath)
	}
	return nil
}
