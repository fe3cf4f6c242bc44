package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/bench"
)

// runBench measures the gateway against this machine's limits.
func runBench(e *env, args []string) error {
	fs := newFlags("bench")
	runs := fs.Int("runs", 3, "saturating runs per figure (the median is reported)")
	dur := fs.Duration("duration", 5*time.Second, "length of each saturating run")
	wearDur := fs.Duration("wear-duration", 30*time.Second, "length of each wear run at a site's rate (the full-rate ones run --duration)")
	half := fs.Duration("half-duration", 20*time.Second, "length of the run at half the maximum rate (its p99 by 5 s slices)")
	devices := fs.Int("devices", 0, "simulated devices per key type (default 1000; --soak: 10000)")
	inflight := fs.String("inflight", "1-4", "tickets a device may have without a receipt: N, or A-B to spread the fleet over A..B")
	sessions := fs.Int("sessions", 2000, "idle DTLS sessions for the CoAP memory figure")
	only := fs.String("only", "", "run only these parts, comma-separated: "+strings.Join(bench.Parts, ", "))
	offered := fs.Float64("offered", 30000, "tickets/s offered to find the maximum")
	registered := fs.Int("registered", 100_000, "devices registered for the memory figure")
	connected := fs.Int("connected", 10_000, "devices connected for the memory figure (0: skip it)")
	jsonPath := fs.String("json", "", "also write the report as JSON to FILE")
	plotPath := fs.String("plot", "", "also draw a PNG chart to FILE")
	soak := fs.Duration("soak", 0, "instead: a soak run this long with --devices (default 10000) connected, sampling the gateway's memory, the receipt latency and the state file's size (with --rate, --every, --window, --retention, --csv, --pin)")
	rate := fs.Float64("rate", 1000, "--soak: tickets per second")
	every := fs.Duration("every", 10*time.Second, "--soak: how often the state file is sampled")
	window := fs.Duration("window", 10*time.Second, "--soak: the aggregation window")
	retention := fs.Duration("retention", 30*time.Second, "--soak: the edge retention (limits.audit_retention)")
	csvPath := fs.String("csv", "", "--soak: also write the samples as CSV to FILE")
	pprofAddr := fs.String("pprof", "", "serve the bench process's /debug/pprof/ (the gateway's profiles) on ADDR, loopback, while it runs")
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
	if *pprofAddr != "" {
		stop, err := servePprof(*pprofAddr, e)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *soak > 0 {
		if *devices == 0 {
			*devices = 10_000
		}
		return runSoak(e, bench.SoakOptions{Duration: *soak, Every: *every, Window: *window, Retention: *retention,
			Rate: *rate, Devices: *devices, Pin: *pinned, Out: e.stderr}, *jsonPath, *csvPath, *plotPath)
	}
	if *connected == 0 {
		*connected = -1 // skip
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	parts, err := benchParts(*only)
	if err != nil {
		return err
	}
	rep, err := bench.Run(ctx, bench.Options{Runs: *runs, Duration: *dur, HalfDuration: *half, Devices: *devices, Offered: *offered,
		InFlight: *inflight, Registered: *registered, Connected: *connected, Sessions: *sessions, Out: e.stderr, Pin: *pinned, Only: parts, WearDuration: *wearDur})
	if err != nil {
		return err
	}
	if err := rep.WriteTable(e.stdout); err != nil {
		return err
	}
	if *jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *plotPath != "" {
		return rep.WritePlot(*plotPath)
	}
	return nil
}

// benchParts reads --only's comma-separated parts.
func benchParts(only string) ([]string, error) {
	var parts []string
	for _, p := range strings.Split(only, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(bench.Parts, p) {
			return nil, usageError{fmt.Sprintf("--only %q: want some of %s", p, strings.Join(bench.Parts, ", "))}
		}
		parts = append(parts, p)
	}
	return parts, nil
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
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
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

// servePprof serves net/http/pprof's handlers on a loopback address, for
// profiling the gateway under the bench's load.
func servePprof(addr string, e *env) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--pprof %q: %v", addr, err)}
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, usageError{fmt.Sprintf("--pprof %q: a loopback address only", addr)}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	fmt.Fprintf(e.stderr, "bench: profiles on http://%s/debug/pprof/\n", ln.Addr())
	return func() { srv.Close(); <-done }, nil
}
