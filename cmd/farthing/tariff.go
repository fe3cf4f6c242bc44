package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
)

// maxTariffFile bounds a tariff file read.
const maxTariffFile = 1 << 20

// runTariff dispatches "tariff check", "tariff quote" and "tariff versions".
func runTariff(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"want a subcommand: check, quote or versions"}
	}
	switch args[0] {
	case "check":
		return runTariffCheck(e, args[1:])
	case "versions":
		return runTariffVersions(e, args[1:])
	case "quote":
		return runTariffQuote(e, args[1:])
	}
	return usageError{fmt.Sprintf("unknown subcommand %q: want check, quote or versions", args[0])}
}

func loadTariffs(path string) (*metering.TariffSet, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxTariffFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxTariffFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return metering.ParseTariffs(path, b)
}

// runTariffCheck validates a tariff file and prints it back normalised.
func runTariffCheck(e *env, args []string) error {
	fs := newFlags("tariff check")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"want one FILE"}
	}
	set, err := loadTariffs(fs.Arg(0))
	if err != nil {
		return err
	}
	out, err := set.Normalize()
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(out)
	return err
}

// runTariffQuote prices the usage between two register values.
func runTariffQuote(e *env, args []string) error {
	fs := newFlags("tariff quote")
	file := fs.String("tariffs", "", "tariff file")
	id := fs.String("tariff", "", "tariff id")
	from := fs.Uint64("from", 0, "register at the previous reading")
	to := fs.Uint64("to", 0, "register at this reading")
	at := fs.String("at", "", "time of this reading, RFC 3339 (e.g. 2026-11-23T18:00:00+01:00)")
	since := fs.String("since", "", "time of the previous reading, RFC 3339 (default: --at)")
	used := fs.Uint64("used", 0, "units already used in the billing period")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	switch {
	case *file == "":
		return usageError{"--tariffs is required"}
	case *id == "":
		return usageError{"--tariff is required"}
	case *at == "":
		return usageError{"--at is required"}
	}
	toTime, err := time.Parse(time.RFC3339, *at)
	if err != nil {
		return fmt.Errorf("--at %q: want RFC 3339 time, e.g. 2026-11-23T18:00:00+01:00", *at)
	}
	fromTime := toTime
	if *since != "" {
		if fromTime, err = time.Parse(time.RFC3339, *since); err != nil {
			return fmt.Errorf("--since %q: want RFC 3339 time", *since)
		}
	}
	set, err := loadTariffs(*file)
	if err != nil {
		return err
	}
	t := set.Get(*id)
	if t == nil {
		return fmt.Errorf("%s: no tariff %q", *file, *id)
	}
	// Two readings through the meter state, so a register that goes
	// backwards is refused exactly as the gateway refuses it.
	var m metering.MeterState
	_, m, _, _ = m.Advance(1, 0, *from, fromTime.UnixMilli())
	u, _, _, err := m.Advance(2, 0, *to, toTime.UnixMilli())
	if err != nil {
		return err
	}
	if fromTime.After(toTime) {
		return fmt.Errorf("--since %s is after --at %s", *since, *at)
	}
	ch, _, err := t.Price(t.StateAt(*used, fromTime.UnixMilli()), u)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, metering.Money{Nanos: ch.Amount, Currency: t.Currency})
	unit := t.Unit
	if ch.Free > 0 {
		fmt.Fprintf(e.stdout, "  free allowance: %d %s\n", ch.Free, unit)
	}
	for b, bc := range ch.Bands {
		if bc.Quantity == 0 {
			continue
		}
		p := t.BandPrice(b)
		fmt.Fprintf(e.stdout, "  %s: %d %s at %s per %d %s = %s\n", t.BandName(b), bc.Quantity, unit,
			metering.Money{Nanos: metering.Nanos(min(p.Nanos, math.MaxInt64)), Currency: t.Currency}, p.Per, unit,
			metering.Money{Nanos: bc.Amount, Currency: t.Currency})
	}
	if ch.TopUp > 0 {
		fmt.Fprintf(e.stdout, "  minimum charge top-up: %s\n", metering.Money{Nanos: ch.TopUp, Currency: t.Currency})
	}
	return nil
}

// runTariffVersions is `farthing tariff versions`: the tariff versions a
// gateway prices by, with their effective times, and the control
// channel's progress.
func runTariffVersions(e *env, args []string) error {
	fs := newFlags("tariff versions")
	data := fs.String("data", defaultData, "the gateway's data directory")
	format := fs.String("format", "table", "table or json")
	op := addOperatorFlags(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	v, err := controlView(op, *data)
	if err != nil {
		return err
	}
	if *format == "json" {
		return printJSON(e, v)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tEFFECTIVE\tAPPLIED\tSOURCE\tIN FORCE\tTARIFFS")
	for _, tv := range v.Versions {
		src, now, eff := "provider", "", tv.Effective.Format(time.RFC3339)
		if tv.Local {
			src = "local"
		}
		if tv.InForce {
			now = "yes"
		}
		if tv.Effective.UnixMilli() == 0 {
			eff = "always"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", tv.ID, eff, tv.Applied.Format(time.RFC3339), src, now, strings.Join(tv.Tariffs, ","))
	}
	w.Flush()
	for _, c := range v.Commands {
		fmt.Fprintf(e.stdout, "commands of %s: applied up to seq %d\n", targetName(c.Target, c.Group), c.Seq)
	}
	return nil
}

// controlView asks the running gateway what the control channel left in
// its books, or reads its state file when none runs (nothing when there
// is no state file yet).
func controlView(op *operatorFlags, data string) (ledger.ControlView, error) {
	var v ledger.ControlView
	err := op.getJSON(data, "/control", &v)
	if !errors.Is(err, errNoDaemon) {
		return v, err
	}
	st, err := store.Open(filepath.Join(data, gateway.StateFile), store.Options{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) || os.IsNotExist(errors.Unwrap(err)) {
		return ledger.ControlView{}, nil
	}
	if err != nil {
		return v, err
	}
	defer st.Close()
	return ledger.New(st, ledger.Config{}).Control(nil, time.Now())
}
