package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

// runPayouts is `farthing payouts run|list|report|statement` on a receiver's data
// directory (while `farthing receive` is not running: it holds the file;
// `farthing receive --payouts FILE` runs them itself).
func runPayouts(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"payouts: want run, list, report or statement"}
	}
	fs := newFlags("payouts " + args[0])
	data := fs.String("data", "farthing-receiver", "the receiver's data directory")
	policy := fs.String("policy", "", "the payouts file (YAML): each provider's threshold, platform fee and payees")
	format := fs.String("format", "table", "table, csv or json")
	account := fs.String("account", "", "statement: only this account")
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	from := fs.String("from", month.Format(time.DateOnly), "statement: the period's start, a date (UTC) or RFC 3339 time")
	to := fs.String("to", month.AddDate(0, 1, 0).Format(time.DateOnly), "statement: the period's end (excluded)")
	db := fs.String("db", "", "the receivers' PostgreSQL books (postgres://…) instead of DATA/receiver.db")
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	var r *provider.Receiver
	var err error
	if *db != "" {
		r, err = pgbooks.Open(context.Background(), *db, nil, pgbooks.Options{MaxConns: 2})
	} else {
		r, err = provider.Open(filepath.Join(*data, "receiver.db"), nil)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	switch args[0] {
	case "run":
		if *policy == "" {
			return usageError{"payouts run --policy FILE"}
		}
		ps, err := provider.ReadPayoutPolicies(*policy)
		if err != nil {
			return err
		}
		made, err := r.RunPayouts(context.Background(), ps, time.Now())
		if err != nil {
			return err
		}
		return printPayouts(e, *format, made)
	case "list":
		ps, err := r.Payouts(context.Background())
		if err != nil {
			return err
		}
		return printPayouts(e, *format, ps)
	case "statement":
		lo, err := parseWhen(*from)
		if err != nil {
			return usageError{"--from: " + err.Error()}
		}
		hi, err := parseWhen(*to)
		if err != nil {
			return usageError{"--to: " + err.Error()}
		}
		lines, err := r.Statement(*account, lo, hi)
		if err != nil {
			return err
		}
		return printStatement(e, *format, lines)
	case "report":
		ws, err := r.Wallets(context.Background())
		if err != nil {
			return err
		}
		return printWallets(e, *format, ws)
	}
	return usageError{"payouts: want run, list, report or statement, not " + args[0]}
}

// parseWhen reads a date (midnight UTC), an RFC 3339 time, or
// +DURATION from now.
func parseWhen(s string) (time.Time, error) {
	if d, ok := strings.CutPrefix(s, "+"); ok {
		dd, err := time.ParseDuration(d)
		return time.Now().Add(dd), err
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

func printStatement(e *env, format string, ls []provider.StatementLine) error {
	rows := [][]string{{"ACCOUNT", "PROVIDER", "METER", "BAND", "CURRENCY", "QUANTITY", "AMOUNT (minor units)", "AMOUNT (nanos)", "TICKETS", "AGGREGATES", "CORRECTIONS"}}
	for _, l := range ls {
		rows = append(rows, []string{l.Account, l.Provider, l.Meter, l.Band, l.Currency, strconv.FormatUint(l.Quantity, 10), l.Minor,
			fmt.Sprint(l.Amount), strconv.FormatUint(l.Tickets, 10), strconv.FormatUint(l.Aggregates, 10), strconv.FormatUint(l.Corrections, 10)})
	}
	return printRows(e, format, ls, rows)
}

func printPayouts(e *env, format string, ps []provider.Payout) error {
	if ps == nil {
		ps = []provider.Payout{}
	}
	rows := [][]string{{"PROVIDER", "PAYOUT", "TIME", "CURRENCY", "GROSS (nanos)", "FEE (nanos)", "PAYEE", "AMOUNT (minor units)", "AMOUNT (nanos)", "CARRIED (nanos)", "AGGREGATES"}}
	for _, p := range ps {
		for _, s := range p.Payees {
			rows = append(rows, []string{p.Provider, strconv.FormatUint(p.Number, 10), time.UnixMilli(p.Time).UTC().Format(time.RFC3339),
				p.Currency, fmt.Sprint(p.Gross), fmt.Sprint(p.Fee), s.ID, strconv.FormatInt(s.Minor, 10), fmt.Sprint(s.Amount),
				fmt.Sprint(p.CarryOut), strconv.FormatUint(p.Count, 10)})
		}
	}
	return printRows(e, format, ps, rows)
}

func printWallets(e *env, format string, ws []provider.Wallet) error {
	rows := [][]string{{"PROVIDER", "RECEIVED", "= PAID TO PAYEES", "+ PLATFORM FEES", "+ CARRIED", "+ PENDING", "PAYOUTS", "BALANCED"}}
	for _, w := range ws {
		m := func(n metering.Nanos) string {
			return metering.Money{Nanos: n, Currency: metering.Currency(w.Currency)}.String()
		}
		rows = append(rows, []string{w.Provider, m(w.Received), m(w.Paid), m(w.Fees), m(w.Carried), m(w.Pending),
			strconv.FormatUint(w.Payouts, 10), strings.ToUpper(strconv.FormatBool(w.Balanced))})
	}
	return printRows(e, format, ws, rows)
}
