package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// moneyOf is n nanos of currency cur, for printing.
func moneyOf[N ~uint64 | ~int64](n N, cur string) metering.Money {
	return metering.Money{Nanos: metering.Nanos(n), Currency: metering.Currency(cur)}
}

// printTotals prints what the books hold, section by section; live adds
// the counters of this run of the receiver (those of a stopped receiver's
// file are its books).
func printTotals(e *env, r *provider.Receiver, live bool) error {
	rep, err := r.Report()
	if err != nil {
		return err
	}
	w := e.stdout
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tACCOUNT\tAMOUNT\tQUANTITY\tTICKETS\tAGGREGATES")
	for _, t := range rep.Totals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", t.Provider, t.Account, moneyOf(t.Amount, t.Currency), t.Quantity, t.Tickets, t.Aggregates)
	}
	tw.Flush()
	printStreams(w, rep)
	printCredits(w, rep)
	printPaywords(w, rep)
	printQuarantine(w, rep)
	if ws, err := r.Wallets(context.Background()); err == nil {
		printWalletLines(w, ws)
	}
	printCounts(w, rep, live)
	return nil
}

// printStreams prints the streams' resets, gaps and restores, and what the
// restores superseded.
func printStreams(w io.Writer, rep *provider.Report) {
	for _, s := range rep.Streams {
		if s.ResetFrom != nil {
			fmt.Fprintf(w, "STREAM RESET: gateway %s (key %s) began epoch %x after epoch %x had reached seq %d\n",
				s.Gateway, s.KeyID, s.Epoch, s.ResetFrom.Epoch, s.ResetFrom.LastSeq)
		}
		if s.Missing > 0 {
			fmt.Fprintf(w, "gateway %s stream %s: %d aggregates missing so far, first %d\n", s.Gateway, s.Stream, s.Missing, s.Gaps[0])
		}
	}
	for _, rs := range rep.Restores {
		fmt.Fprintf(w, "RESTORE: gateway %s was restored from a backup: stream %s is superseded after seq %d by stream %s\n",
			rs.Gateway, rs.Superseded, rs.After, rs.By)
	}
	for _, m := range rep.Superseded {
		line := fmt.Sprintf("SUPERSEDED BY RESTORE: %d %s(s) of %s", m.Count, m.Kind, m.Account)
		if m.Provider != "" {
			line += " owed to " + m.Provider
		}
		line += fmt.Sprintf(": %s, out of the payable books", moneyOf(m.Amount, m.Currency))
		if m.Paid > 0 {
			line += fmt.Sprintf("; %s of it was paid out already and is carried as money to recover", moneyOf(m.Paid, m.Currency))
		}
		fmt.Fprintln(w, line)
	}
	for _, h := range rep.Held {
		fmt.Fprintf(w, "HELD (%s): stream %s seq %d, gateway %s, %s/%s %s: not booked, see GET /totals or the receiver file\n",
			h.Reason, h.Stream, h.Seq, h.Gateway, h.Provider, h.Account, moneyOf(h.Amount, h.Currency))
	}
}

// printCredits prints the credits by kind, and each voucher credited
// twice with what resolved it.
func printCredits(w io.Writer, rep *provider.Report) {
	for _, c := range rep.Credits {
		if c.Kind == "adjustment_debit" {
			fmt.Fprintf(w, "debited %s: %s by %d adjustment(s)\n", c.Account, moneyOf(c.Amount, c.Currency), c.Count)
			continue
		}
		fmt.Fprintf(w, "credited %s: %s by %d %s(s)\n", c.Account, moneyOf(c.Amount, c.Currency), c.Count, c.Kind)
	}
	for _, d := range rep.Doubles {
		line := fmt.Sprintf("VOUCHER CREDITED TWICE: %s, %s to %s, first %s, again %s", d.Voucher, moneyOf(d.Amount, d.Currency),
			d.Account, d.First, d.Second)
		if r := d.Resolved; r != nil {
			line += fmt.Sprintf(": RESOLVED by adjustment %s (%s, %s)", r.Adjustment, moneyOf(r.Amount, d.Currency), r.Reason)
		}
		if d.Fix != "" {
			line += "\n  resolve it: " + d.Fix
		}
		fmt.Fprintln(w, line)
	}
}

// printPaywords prints the usage payword chains proved and the claims
// not reconciled.
func printPaywords(w io.Writer, rep *provider.Report) {
	for _, p := range rep.Paywords {
		line := fmt.Sprintf("PAYWORD %s/%s %s: %d proven by the devices' hash chains (%d records), checked here; the aggregates claim %d",
			p.Provider, p.Account, p.Meter, p.Quantity, p.Records, p.Claimed)
		if p.Unattested > 0 {
			line += fmt.Sprintf("; %d of it from commitments no device key checked", p.Unattested)
		}
		fmt.Fprintln(w, line)
	}
	for _, c := range rep.PaywordClaims {
		switch {
		case c.Foreign:
			fmt.Fprintf(w, "PAYWORD CLAIM %s (%s/%s %s): records of another provider, account or meter named it before it came; %d proven of %d\n",
				c.Stream, c.Provider, c.Account, c.Meter, c.Proven, c.Claimed)
		case !c.Booked:
			fmt.Fprintf(w, "PAYWORD CLAIM %s (%s/%s %s): %d proven, the aggregate not booked yet\n", c.Stream, c.Provider, c.Account, c.Meter, c.Proven)
		default:
			fmt.Fprintf(w, "PAYWORD CLAIM %s (%s/%s %s): claims %d, %d proven by %d records\n", c.Stream, c.Provider, c.Account, c.Meter,
				c.Claimed, c.Proven, c.Records)
		}
	}
}

// printQuarantine prints the tickets the gateways held and what became of
// each.
func printQuarantine(w io.Writer, rep *provider.Report) {
	for _, h := range rep.Quarantine {
		var usage []string
		for _, u := range h.Usage {
			usage = append(usage, fmt.Sprintf("%s=%d", u.Meter, u.Quantity))
		}
		line := fmt.Sprintf("QUARANTINE %s: %s/%d (%s, %s) %s by rule %s", h.Gateway, h.Device, h.Ticket, h.Account, h.Provider,
			strings.Join(usage, " "), h.Rule)
		switch h.Action {
		case protocol.HoldHeld:
			line += ": HELD, not charged"
		case protocol.HoldReleased:
			line += fmt.Sprintf(": released, charged %s in the aggregates", moneyOf(h.Amount, h.Currency))
		default:
			line += ": voided, never charged"
		}
		if h.Note != "" {
			line += " (" + h.Note + ")"
		}
		fmt.Fprintln(w, line)
	}
}

// printWalletLines prints each wallet that paid out or carries money, and
// whether it reconciles.
func printWalletLines(w io.Writer, ws []provider.Wallet) {
	for _, wl := range ws {
		if wl.Payouts == 0 && wl.Carried == 0 {
			continue
		}
		verdict := "BALANCED"
		if !wl.Balanced {
			verdict = "NOT BALANCED"
		}
		fmt.Fprintf(w, "wallet %s: received %s = paid %s + fees %s + carried %s + pending %s: %s\n", wl.Provider,
			moneyOf(wl.Received, wl.Currency), moneyOf(wl.Paid, wl.Currency), moneyOf(wl.Fees, wl.Currency),
			moneyOf(wl.Carried, wl.Currency), moneyOf(wl.Pending, wl.Currency), verdict)
	}
}

// printCounts prints what the books hold, counted; live adds this run's
// counters.
func printCounts(w io.Writer, rep *provider.Report, live bool) {
	var aggregates, credits, superseded uint64
	for _, t := range rep.Totals {
		aggregates += t.Aggregates
	}
	for _, c := range rep.Credits {
		credits += c.Count
	}
	for _, m := range rep.Superseded {
		superseded += m.Count
	}
	fmt.Fprintf(w, "booked %d aggregates in %d streams, %d credit records, %d held tickets reported, %d aggregates held unbooked, "+
		"%d vouchers credited twice, %d records superseded by a restore\n",
		aggregates, len(rep.Streams), credits, len(rep.Quarantine), len(rep.Held), len(rep.Doubles), superseded)
	if !live {
		return
	}
	st := rep.Stats
	fmt.Fprintf(w, "this run: accepted %d (credits %d, hold records %d), duplicates dropped %d, conflicts held %d, wrong gateway held %d, "+
		"stream resets %d, restores %d, superseded by a restore %d, vouchers credited twice %d, refused %d\n",
		st.Accepted, st.Credits, st.Holds, st.Duplicates, st.Conflicts, st.WrongGateway, st.Resets, st.Restores, st.Superseded,
		st.DoubleRedemptions, st.Refused)
}
