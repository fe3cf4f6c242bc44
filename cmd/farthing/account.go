package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/metering"
)

// runAccount is `farthing account topup|adjust|list|show|entries`,
// through the running daemon's operator API.
func runAccount(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"account: want topup, adjust, list, show or entries"}
	}
	fs := newFlags("account " + args[0])
	data := fs.String("data", defaultData, "the gateway's data directory")
	format := fs.String("format", "table", "table, csv or json")
	op := addOperatorFlags(fs)
	c := accountCmd{e: e, fs: fs, op: op, data: data, format: format}
	switch args[0] {
	case "topup":
		return c.topup(args[1:])
	case "adjust":
		return c.adjust(args[1:])
	case "list", "show":
		pos, err := parseInterspersed(fs, args[1:], 1)
		if err != nil {
			return err
		}
		var views []ledger.AccountView
		if args[0] == "show" {
			if len(pos) != 1 {
				return usageError{"account show ACCOUNT"}
			}
			var v ledger.AccountView
			if err := op.getJSON(*data, "/accounts/"+url.PathEscape(pos[0]), &v); err != nil {
				return err
			}
			views = append(views, v)
		} else if err := op.getJSON(*data, "/accounts", &views); err != nil {
			return err
		}
		return printAccounts(e, *format, views)
	case "entries":
		since := fs.String("since", "", "only entries at or after this time (RFC 3339 or Unix ms)")
		pos, err := parseInterspersed(fs, args[1:], 1)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageError{"account entries ACCOUNT [--since T]"}
		}
		var entries []metering.Entry
		path := "/accounts/" + url.PathEscape(pos[0]) + "/entries?since=" + url.QueryEscape(*since)
		if err := op.getJSON(*data, path, &entries); err != nil {
			return err
		}
		return printEntries(e, *format, entries)
	}
	return usageError{"account: want topup, adjust, list, show or entries, not " + args[0]}
}

func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printAccounts(e *env, format string, views []ledger.AccountView) error {
	money := func(n metering.Nanos, c string) string {
		return metering.Money{Nanos: n, Currency: metering.Currency(c)}.String()
	}
	rows := [][]string{{"ACCOUNT", "KIND", "BALANCE", "AVAILABLE", "CREDIT LIMIT", "OPENING", "ENTRIES", "RESERVED"}}
	for _, v := range views {
		rows = append(rows, []string{v.ID, v.Kind, money(v.Balance, v.Currency), money(v.Available, v.Currency),
			money(v.CreditLimit, v.Currency), money(v.Opening, v.Currency), strconv.FormatUint(v.Entries, 10), money(v.Reserved, v.Currency)})
	}
	if err := printRows(e, format, views, rows); err != nil || format != "table" || len(views) != 1 || len(views[0].Grants) == 0 {
		return err
	}
	fmt.Fprintln(e.stdout)
	v := views[0]
	grows := [][]string{{"GRANT", "DEVICE", "METER", "STATE", "LIMIT", "USED", "GRANTED", "RESERVED", "CHARGED", "EXPIRES"}}
	for _, g := range v.Grants {
		grows = append(grows, []string{strconv.FormatUint(g.ID, 10), g.Device, g.Meter, g.State, strconv.FormatUint(g.Limit, 10),
			strconv.FormatUint(g.Used, 10), strconv.FormatUint(g.Granted, 10), money(g.Reserved, v.Currency), money(g.Charged, v.Currency),
			time.UnixMilli(g.Expiry).UTC().Format(time.RFC3339)})
	}
	return printRows(e, format, nil, grows)
}

func printEntries(e *env, format string, entries []metering.Entry) error {
	rows := [][]string{{"SEQ", "TIME", "KIND", "AMOUNT (nanos)", "REF"}}
	for _, x := range entries {
		rows = append(rows, []string{strconv.FormatUint(x.Seq, 10), time.UnixMilli(x.Time).UTC().Format(time.RFC3339Nano),
			x.Kind.String(), strconv.FormatInt(int64(x.Amount), 10), x.Ref})
	}
	return printRows(e, format, entries, rows)
}

// printRows prints v as JSON, or rows as a table or CSV.
func printRows(e *env, format string, v any, rows [][]string) error {
	switch format {
	case "json":
		return printJSON(e, v)
	case "csv":
		w := csv.NewWriter(e.stdout)
		w.WriteAll(rows)
		return w.Error()
	case "table":
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		for _, r := range rows {
			for i, c := range r {
				if i > 0 {
					fmt.Fprint(tw, "\t")
				}
				fmt.Fprint(tw, c)
			}
			fmt.Fprintln(tw)
		}
		return tw.Flush()
	}
	return usageError{"--format: want table, csv or json"}
}

// parseInterspersed parses flags that may come before, between and after
// the positional arguments (at most max of them), which it returns. An
// argument that is a negative amount ("-20.00 EUR") is positional, unless
// it is a flag's value; after "--" everything is.
func parseInterspersed(fs *flag.FlagSet, args []string, max int) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-' && (a[1] < '0' || a[1] > '9'):
			flags = append(flags, a)
			if takesValue(fs, a) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			pos = append(pos, a)
		}
	}
	if err := parse(fs, flags, 0); err != nil {
		return nil, err
	}
	if len(pos) > max {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", pos[max])}
	}
	return pos, nil
}

// takesValue reports whether flag argument a ("--ref", not "--ref=x")
// names a flag that takes the next argument as its value.
func takesValue(fs *flag.FlagSet, a string) bool {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// accountCmd is one `farthing account` command with its common flags
// defined (their values are set once the command parses its arguments).
type accountCmd struct {
	e            *env
	fs           *flag.FlagSet
	op           *operatorFlags
	data, format *string
}

// topup is `farthing account topup ACCOUNT AMOUNT --ref REF`.
func (c accountCmd) topup(args []string) error {
	ref := c.fs.String("ref", "", "your reference for this top-up (a payment id): the same ref again is the same top-up")
	pos, err := parseInterspersed(c.fs, args, 2)
	if err != nil {
		return err
	}
	if len(pos) != 2 || *ref == "" {
		return usageError{"account topup ACCOUNT AMOUNT --ref REF (AMOUNT like \"5.00 EUR\")"}
	}
	res, err := c.post(pos, "topups", "a top-up", operator.TopUpRequest{Amount: pos[1], Ref: *ref})
	if err != nil || *c.format == "json" {
		return err
	}
	c.printBooked(res, "topped up", metering.Money.String)
	return nil
}

// adjust is `farthing account adjust ACCOUNT AMOUNT --ref REF --reason CODE`.
func (c accountCmd) adjust(args []string) error {
	ref := c.fs.String("ref", "", "your reference for this adjustment: the same ref again is the same adjustment")
	reason := c.fs.String("reason", "", "why, a code: double_redemption, goodwill, correction, chargeback, …")
	note := c.fs.String("note", "", "your words, kept in the audit log")
	voucher := c.fs.String("voucher", "", "the voucher this settles (one credited twice): the provider's books link it to that flag")
	pos, err := parseInterspersed(c.fs, args, 2)
	if err != nil {
		return err
	}
	if len(pos) != 2 || *ref == "" || *reason == "" {
		return usageError{"account adjust ACCOUNT AMOUNT --ref REF --reason CODE [--note TEXT] [--voucher ID] (AMOUNT like \"-20.00 EUR\" to debit)"}
	}
	req := operator.AdjustRequest{Amount: pos[1], Ref: *ref, Reason: *reason, Note: *note, Voucher: *voucher}
	res, err := c.post(pos, "adjustments", "an adjustment", req)
	if err != nil || *c.format == "json" {
		return err
	}
	c.printBooked(res, "adjusted", func(m metering.Money) string { return "by " + m.String() + " (" + res.Reason + ")" })
	return nil
}

// printBooked prints the line for a top-up or adjustment booked (did) or
// repeated: the account, what was done with its amount (how), the entry
// and the balance.
func (c accountCmd) printBooked(res ledger.TopUpResult, did string, how func(metering.Money) string) {
	if res.Repeated {
		did = "already done (same ref)"
	}
	cur := metering.Currency(res.Currency)
	fmt.Fprintf(c.e.stdout, "%s: %s %s, entry %d, balance %s\n", res.Account, did,
		how(metering.Money{Nanos: res.Amount, Currency: cur}), res.EntrySeq, metering.Money{Nanos: res.Balance, Currency: cur})
}

// post checks the amount (pos[1]) and posts req to the account's
// (pos[0]) collection under the running daemon; with --format json it
// prints the result too. what names the request in the error when no
// daemon runs.
func (c accountCmd) post(pos []string, collection, what string, req any) (ledger.TopUpResult, error) {
	var res ledger.TopUpResult
	if _, err := metering.ParseMoney(pos[1]); err != nil {
		return res, usageError{"amount: " + err.Error()}
	}
	if err := c.op.postJSON(*c.data, "/accounts/"+url.PathEscape(pos[0])+"/"+collection, req, &res); err != nil {
		if errors.Is(err, errNoDaemon) {
			return res, fmt.Errorf("%s needs the running farthingd: %w", what, err)
		}
		return res, err
	}
	if *c.format == "json" {
		return res, printJSON(c.e, res)
	}
	return res, nil
}
