package bench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/internal/procio"
	"github.com/farthing-iot/farthing/provider"
)

// SoakOptions configure a soak run: a gateway taking Rate tickets/s for
// Duration from Devices simulated HMAC devices over its embedded broker,
// with a provider receiver that confirms every aggregate, and shortened
// horizons (Window, Retention), sampled every Every.
type SoakOptions struct {
	Duration, Every, Window, Retention time.Duration
	Rate                               float64
	Devices                            int
	// Pin runs the gateway and the simulated devices on separate cores,
	// as Options.Pin does.
	Pin bool
	Out io.Writer `json:"-"` // progress lines
}

// SoakSample is the state file at one moment of a soak run.
type SoakSample struct {
	Seconds   float64 `json:"seconds"`
	Accepted  float64 `json:"accepted_tickets"`
	FileBytes float64 `json:"file_bytes"`
	InUse     float64 `json:"inuse_bytes"`
	// RSSMB is the gateway's resident memory (it runs in the bench's
	// process; the simulated devices in their own).
	RSSMB float64 `json:"gateway_rss_mb"`
	// Unconfirmed is the age in seconds of the oldest aggregate its
	// upstream has not confirmed: what keeps tickets from being pruned.
	Unconfirmed float64 `json:"oldest_unconfirmed_seconds"`
	// WriteRate is the bytes the gateway's process wrote to storage per
	// second since the sample before (write_bytes of /proc/self/io).
	WriteRate float64 `json:"bytes_written_per_second"`
}

// SoakReport is a soak run's samples and the plateau they show: the most
// bytes in use in the middle third of the run and in the last third.
type SoakReport struct {
	Options    SoakOptions  `json:"options"`
	Samples    []SoakSample `json:"samples"`
	MiddleMax  float64      `json:"middle_third_max_inuse_bytes"`
	LastMax    float64      `json:"last_third_max_inuse_bytes"`
	Accepted   float64      `json:"accepted_tickets"`
	FinalBytes float64      `json:"final_file_bytes"`
	// Latency is the receipt latency's p99 by sample interval; P99MS over
	// the whole run.
	Latency []SoakLatency `json:"latency"`
	P99MS   float64       `json:"p99_ms"`
}

// SoakLatency is the receipt latency of one interval of a soak run.
type SoakLatency struct {
	Seconds  float64 `json:"seconds"` // the interval's end, on the samples' clock
	P99MS    float64 `json:"p99_ms"`
	Receipts uint64  `json:"receipts"`
}

// Soak runs the soak: see SoakOptions. Each sample reads the gateway's
// /metrics (tickets accepted, the state file's size and bytes in use) and
// its resident memory, so a leak shows as well as a growing file.
func Soak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	data, err := os.MkdirTemp("", "farthing-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(data)
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, "soak: "+format+"\n", args...) }
	if o.Pin {
		p, err := startPinning()
		if err != nil {
			return nil, err
		}
		pin = p
		defer func() { pin = nil }()
		say("gateway pinned to cores %s, devices to cores %s", cpuList(p.gateway), cpuList(p.load))
	}
	if err := provisionHMAC(data, o.Devices); err != nil {
		return nil, err
	}
	upstream, stopProvider, err := soakProvider(data)
	if err != nil {
		return nil, err
	}
	defer stopProvider()
	metrics := freeAddr("tcp")
	broker := freeAddr("tcp")
	stop, err := startGateway(ctx, data, "gw-soak", func(c *gateway.Config) {
		c.MQTT.Listen, c.HTTP.Listen = broker, metrics
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: o.Window}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "provider", Type: "http", URL: upstream}}
		c.Limits.AuditRetention = o.Retention
		c.Audit.Sink, c.Audit.Dir = "files", filepath.Join(data, "audit")
	})
	if err != nil {
		return nil, err
	}
	defer stop()
	say("%d devices, %.0f tickets/s for %v; windows %v, edge retention %v; a sample every %v",
		o.Devices, o.Rate, o.Duration, o.Window, o.Retention, o.Every)
	simCtx, cancel := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	var simRep *sim.Report
	go func() {
		r, _, _, err := runSim(simCtx, Options{Devices: o.Devices, InFlight: "1-4", slice: o.Every}, data, "hmac", "mqtt", "tcp://"+broker, o.Rate, o.Duration, false)
		simRep = r
		simDone <- err
	}()
	rep := &SoakReport{Options: o}
	simEnded, err := sampleSoak(ctx, o, rep, "http://"+metrics+"/metrics", simDone, say)
	cancel()
	if !simEnded {
		<-simDone // the simulator stops with simCtx
	}
	if errors.Is(err, errSoakCancelled) {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	summarise(rep, simRep, o)
	return rep, nil
}

// errSoakCancelled: the soak's context ended before the simulator did.
var errSoakCancelled = errors.New("soak cancelled")

// soakProvider starts the provider's receiver over HTTP, which books and
// confirms, trusting the key it makes for the gateway in data; it returns
// the upstream URL and a function that stops it.
func soakProvider(data string) (string, func(), error) {
	k, err := keyfile.GenerateEd25519()
	if err != nil {
		return "", nil, err
	}
	priv, err := k.EncodePrivate()
	if err != nil {
		return "", nil, err
	}
	if err := keyfile.WriteNew(filepath.Join(data, "gateway.key"), priv, 0o600); err != nil {
		return "", nil, err
	}
	recv, err := provider.Open(filepath.Join(data, "receiver.db"), []provider.Trust{{Key: k.Private.Public().(ed25519.PublicKey)}})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		recv.Close()
		return "", nil, err
	}
	srv := &http.Server{Handler: recv.Handler(slog.New(slog.NewTextHandler(io.Discard, nil)), provider.ReadAccess{}), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/aggregates", func() { srv.Close(); <-served; recv.Close() }, nil
}

// sampleSoak scrapes the gateway's metrics every o.Every, and once more
// when the simulator is done, into rep's samples; simEnded says whether
// it heard the simulator's end.
func sampleSoak(ctx context.Context, o SoakOptions, rep *SoakReport, metricsURL string, simDone <-chan error, say func(string, ...any)) (simEnded bool, err error) {
	start := time.Now()
	lastAt, lastWritten := start, procio.WriteBytes()
	t := time.NewTicker(o.Every)
	defer t.Stop()
	for running := true; running; {
		select {
		case <-ctx.Done():
			return false, errSoakCancelled
		case err := <-simDone:
			simEnded = true
			if err != nil {
				return true, fmt.Errorf("sim: %w", err)
			}
			running = false
		case <-t.C:
		}
		m, err := scrape(metricsURL)
		if err != nil {
			return simEnded, err
		}
		s := SoakSample{Seconds: time.Since(start).Seconds(), Accepted: m[`farthing_tickets_total{reason="",status="accepted"}`],
			FileBytes: m["farthing_store_bytes"], InUse: m["farthing_store_inuse_bytes"], RSSMB: rssMB(),
			Unconfirmed: m["farthing_oldest_unforwarded_seconds"]}
		now, written := time.Now(), procio.WriteBytes()
		s.WriteRate = float64(written-lastWritten) / max(now.Sub(lastAt).Seconds(), 1e-9)
		lastAt, lastWritten = now, written
		rep.Samples = append(rep.Samples, s)
		say("%6.0fs  %10.0f tickets  file %7.1f MB  in use %7.1f MB  gateway RSS %6.1f MB  oldest unconfirmed %4.0fs  written %7.1f KB/s", s.Seconds, s.Accepted,
			s.FileBytes/1e6, s.InUse/1e6, s.RSSMB, s.Unconfirmed, s.WriteRate/1e3)
	}
	return simEnded, nil
}

// summarise adds the receipt latency by slice and the state file's
// plateau figures to rep.
func summarise(rep *SoakReport, simRep *sim.Report, o SoakOptions) {
	// The receipt latency by slice of the run, each at its slice's end on
	// the samples' clock (the simulator starts sending after its devices
	// have connected, so its slices end at the run's end).
	if simRep != nil && len(rep.Samples) > 0 {
		end := rep.Samples[len(rep.Samples)-1].Seconds
		for k, sl := range simRep.Slices {
			at := end - float64(len(simRep.Slices)-1-k)*o.Every.Seconds()
			rep.Latency = append(rep.Latency, SoakLatency{Seconds: at, P99MS: float64(sl.P99) / 1e6, Receipts: sl.Receipts})
		}
		rep.P99MS = float64(simRep.P99) / 1e6
	}
	n := len(rep.Samples)
	for i, s := range rep.Samples {
		switch {
		case i >= 2*n/3:
			rep.LastMax = max(rep.LastMax, s.InUse)
		case i >= n/3:
			rep.MiddleMax = max(rep.MiddleMax, s.InUse)
		}
	}
	if n > 0 {
		rep.Accepted, rep.FinalBytes = rep.Samples[n-1].Accepted, rep.Samples[n-1].FileBytes
	}
}

// provisionHMAC writes the tariffs and n HMAC devices.
func provisionHMAC(data string, n int) error {
	if err := provision(data, n); err != nil {
		return err
	}
	rf, err := registry.ReadFile(filepath.Join(data, "devices.yaml"))
	if err != nil {
		return err
	}
	var keep []registry.Entry
	for _, e := range rf.Devices {
		if e.KeyType == "hmac" {
			keep = append(keep, e)
		}
	}
	rf.Devices = keep
	return registry.WriteFile(filepath.Join(data, "devices.yaml"), rf)
}

// scrape reads a Prometheus text page into name{labels} → value.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// WriteCSV writes the samples as CSV.
func (r *SoakReport) WriteCSV(w io.Writer) error {
	if _, err := fmt.Fprintln(w, "seconds,accepted_tickets,file_bytes,inuse_bytes,gateway_rss_mb,p99_ms,write_bytes_per_s"); err != nil {
		return err
	}
	for _, s := range r.Samples {
		p99 := ""
		for _, l := range r.Latency { // the interval that ends nearest the sample
			if d := l.Seconds - s.Seconds; d > -r.Options.Every.Seconds()/2 && d <= r.Options.Every.Seconds()/2 {
				p99 = fmt.Sprintf("%.1f", l.P99MS)
			}
		}
		if _, err := fmt.Fprintf(w, "%.0f,%.0f,%.0f,%.0f,%.1f,%s,%.0f\n", s.Seconds, s.Accepted, s.FileBytes, s.InUse, s.RSSMB, p99, s.WriteRate); err != nil {
			return err
		}
	}
	return nil
}

// WritePlot draws the state file's size and bytes in use over time.
func (r *SoakReport) WritePlot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("State file under %.0f tickets/s, upstream confirming (windows %v, edge retention %v)",
		r.Options.Rate, r.Options.Window, r.Options.Retention)
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "MB or MB/s (latency: ms)"
	file, inuse := make(plotter.XYs, len(r.Samples)), make(plotter.XYs, len(r.Samples))
	var rss, written plotter.XYs
	for i, s := range r.Samples {
		if s.WriteRate > 0 {
			written = append(written, plotter.XY{X: s.Seconds / 60, Y: s.WriteRate / 1e6})
		}
		file[i] = plotter.XY{X: s.Seconds / 60, Y: s.FileBytes / 1e6}
		inuse[i] = plotter.XY{X: s.Seconds / 60, Y: s.InUse / 1e6}
		if s.RSSMB > 0 { // samples from before RSS was kept have none
			rss = append(rss, plotter.XY{X: s.Seconds / 60, Y: s.RSSMB})
		}
	}
	lines := []any{"file size, MB", file, "bytes in use, MB", inuse}
	if len(rss) > 0 {
		lines = append(lines, "gateway RSS, MB", rss)
	}
	if len(written) > 0 {
		lines = append(lines, "bytes written, MB/s", written)
	}
	if len(r.Latency) > 0 {
		p99 := make(plotter.XYs, len(r.Latency))
		for i, l := range r.Latency {
			p99[i] = plotter.XY{X: l.Seconds / 60, Y: l.P99MS}
		}
		lines = append(lines, "p99 receipt latency, ms", p99)
	}
	if err := plotutil.AddLines(p, lines...); err != nil {
		return err
	}
	p.Legend.Top = false // the lines run along the top
	p.Legend.Left = false
	p.Y.Min = 0
	return p.Save(20*vg.Centimeter, 10*vg.Centimeter, path)
}
