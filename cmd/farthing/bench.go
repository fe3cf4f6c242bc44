package main

import (
	"context"
	"encoding/json"
	"fmt"
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
	soak := fs.Duration("soak", 0, "instead: a soak run this long, sampling the state file's size (with --rate, --every, --window, --retention, --csv)")
	rate := fs.Float64("rate", 1000, "--soak: tickets per second")
	every := fs.Duration("every", 10*time.Second, "--soak: how often the state file is sampled")
	window := fs.Duration("window", 10*time.Second, "--soak: the aggregation window")
	retention := fs.Duration("retention", 30*time.Second, "--soak: the edge retention (limits.audit_retention)")
	csvPath := fs.String("csv", "", "--soak: also write the samples as CSV to FILE")
	pinned := fs.Bool("pin", false, "run the gateway on the first half of the cores and the load on the other half")
	l2 := fs.String(bench.L2ClientsFlag, "", "(used by --pin) run only L2's MQTT clients against the broker at ADDR and print the rate")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *l2 != "" {
		v, err := bench.BrokerLimit(context.Background(), *l2, *dur)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%.0f\n", v)
		return nil
	}
	if *soak > 0 {
		return runSoak(e, bench.SoakOptions{Duration: *soak, Every: *every, Window: *window, Retention: *retention,
			Rate: *rate, Devices: *devices, Out: e.stderr}, *jsonPath, *csvPath, *plotPath)
	}
	if *connected == 0 {
		*connected = -1 // skip
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, bench.Options{Runs: *runs, Duration: *dur, Devices: *devices, Offered: *offered,
		Registered: *registered, Connected: *connected, Out: e.stderr, Pin: *pinned})
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

// runSoak is `farthing bench --soak D`: the state file's size over a long
// run with a confirming upstream.
func runSoak(e *env, o bench.SoakOptions, jsonPath, csvPath, plotPath string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Soak(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "soak: %.0f tickets in %v at %.0f/s; bytes in use: at most %.1f MB in the middle third, %.1f MB in the last third; file %.1f MB at the end\n",
		rep.Accepted, o.Duration, o.Rate, rep.MiddleMax/1e6, rep.LastMax/1e6, rep.FinalBytes/1e6)
	if jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if csvPath != "" {
		f, err := os.Create(csvPath)
		if err != nil {
			return err
		}
		if err := rep.WriteCSV(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if plotPath != "" {
		return rep.WritePlot(plotPath)
	}
	return nil
}
