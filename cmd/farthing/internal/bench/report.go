package bench

import (
	"fmt"
	"io"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	pinned := ""
	if r.Pinned {
		pinned = fmt.Sprintf(", the gateway pinned to %d of them, its load to the others", r.GatewayCores)
	}
	fmt.Fprintf(w, "Farthing bench on %s: %d cores%s, %s, %s (%.0f s)\n\n", r.Host, r.Cores, pinned, r.Go, r.When.Format("2006-01-02 15:04 MST"), r.ElapsedS)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if r.L1.Median > 0 || len(r.L2) > 0 || r.L3.Median > 0 {
		fmt.Fprintln(tw, "LIMIT\tMEDIAN/s\tSPREAD")
	}
	cores := r.GatewayCores
	if cores == 0 { // a report from before the field
		cores = r.Cores
	}
	if r.L1.Median > 0 {
		fmt.Fprintf(tw, "L1 Ed25519 ticket decode+verify, batched, the gateway's %d cores\t%.0f\t%.0f–%.0f\n", cores, r.L1.Median, r.L1.Min, r.L1.Max)
	}
	for _, k := range []string{"embedded", "mosquitto"} {
		if s, ok := r.L2[k]; ok {
			fmt.Fprintf(tw, "L2 %s broker, QoS 1 paho → paho\t%.0f\t%.0f–%.0f\n", k, s.Median, s.Min, s.Max)
		}
	}
	if r.L3.Median > 0 {
		fmt.Fprintf(tw, "L3 bare CoAP/DTLS server, POST → 2.04\t%.0f\t%.0f–%.0f\n", r.L3.Median, r.L3.Min, r.L3.Max)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(r.E) > 0 {
		fmt.Fprintln(tw, "END TO END\tDEVICES×IN FLIGHT\tTICKETS/s\tSPREAD\tRATIO\tGATEWAY CPU µs/TICKET\tCPU cores\tP50/P99 ms AT MAX\tP50/P99 ms AT HALF\tP99 BY 5 s SLICE\tRSS MB")
		for _, e := range r.E {
			fmt.Fprintf(tw, "%s\t%d×%s\t%.0f\t%.0f–%.0f\t%s %.2f\t%.1f\t%.2f\t%.1f / %.1f\t%.1f / %.1f\t%.1f–%.1f\t%.0f\n",
				e.Name, e.Devices, e.InFlight, e.Throughput.Median, e.Throughput.Min, e.Throughput.Max, e.Limit, e.Ratio,
				e.CPUPerTicket, e.CPUCores, e.AtMax.P50, e.AtMax.P99, e.AtHalf.P50, e.AtHalf.P99, e.HalfP99.Min, e.HalfP99.Max, e.RSSMB)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := r.writeWear(w); err != nil || len(r.Memory) == 0 {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMORY\tREGISTERED\tRSS MB\tCONNECTED\tRSS MB\tANONYMOUS MB\tSETTLED MB\tKB PER CONNECTION\tBROKER RSS MB")
	for _, m := range r.Memory {
		broker := "in the gateway"
		if m.BrokerMB > 0 {
			broker = fmt.Sprintf("%.0f", m.BrokerMB)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%s\n", m.Name, m.Registered, m.IdleRSSMB, m.Connected, m.RSSMB, m.AnonMB, m.SettledMB, m.PerConnKB, broker)
	}
	return tw.Flush()
}

// writeWear prints the wear rows, if any.
func (r *Report) writeWear(w io.Writer) error {
	if len(r.Wear) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WEAR	DEVICES	TICKETS	SECONDS	BYTES WRITTEN/TICKET	FSYNCS/TICKET	BYTES WRITTEN/s")
	for _, x := range r.Wear {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%.2f\t%.0f\n", x.Name, x.Devices, x.Tickets, x.Seconds, x.BytesPerTicket, x.SyncsPerTicket, x.WriteRate)
	}
	return tw.Flush()
}

// WritePlot draws, per end-to-end figure, its throughput next to its limit,
// with the p99 receipt latency at half that rate under its name, as a PNG.
func (r *Report) WritePlot(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Farthing on %s (%d cores)", r.Host, r.Cores)
	p.Y.Label.Text = "tickets or messages per second"
	var names []string
	var tps, lim plotter.Values
	for _, e := range r.E {
		names = append(names, fmt.Sprintf("%s\np99 %.0f ms at half rate", e.Name, e.AtHalf.P99))
		tps = append(tps, e.Throughput.Median)
		l := e.Throughput.Median / max(e.Ratio, 1e-9)
		lim = append(lim, l)
	}
	w := vg.Points(18)
	b1, err := plotter.NewBarChart(tps, w)
	if err != nil {
		return err
	}
	b1.Color = plotutil.Color(0)
	b1.Offset = -w / 2
	b2, err := plotter.NewBarChart(lim, w)
	if err != nil {
		return err
	}
	b2.Color = plotutil.Color(1)
	b2.Offset = w / 2
	p.Add(b1, b2)
	p.Legend.Add("end to end", b1)
	p.Legend.Add("its limit (L1, L2 or L3)", b2)
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(names...)
	return p.Save(vg.Length(140+110*len(names)), 10*vg.Centimeter, path)
}
