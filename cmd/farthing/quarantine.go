package main

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/gateway/store"
)

// runQuarantine is `farthing quarantine list|show|release|void`: the
// tickets held by a plausibility rule, through the running daemon's
// operator API.
func runQuarantine(e *env, args []string) error {
	const want = "quarantine: want list, show, release or void"
	if len(args) == 0 {
		return usageError{want}
	}
	fs := newFlags("quarantine " + args[0])
	data := fs.String("data", defaultData, "the gateway's data directory")
	format := fs.String("format", "table", "table, csv or json")
	op := addOperatorFlags(fs)
	switch args[0] {
	case "list":
		state := fs.String("state", "held", "held, released, voided or all")
		device := fs.String("device", "", "only this device's")
		if _, err := parseInterspersed(fs, args[1:], 0); err != nil {
			return err
		}
		if *state == "all" {
			*state = ""
		}
		var hs []ledger.Held
		q := url.Values{"state": {*state}, "device": {*device}}
		err := op.getJSON(*data, "/holds?"+q.Encode(), &hs)
		if errors.Is(err, errNoDaemon) { // a stopped gateway: its state file
			err = withStateFile(*data, func(st *store.Store) (err error) {
				hs, err = ledger.New(st, ledger.Config{}).Holds(*state, *device)
				return err
			})
		}
		if err != nil {
			return err
		}
		return printHolds(e, *format, hs)
	case "show", "release", "void":
		note := fs.String("note", "", "why (required for void): up to 64 characters, kept in the audit log and sent upstream")
		pos, err := parseInterspersed(fs, args[1:], 1)
		if err != nil {
			return err
		}
		usage := "quarantine " + args[0] + " DEVICE/SEQ"
		if args[0] == "void" {
			usage += " --note WHY"
		}
		if len(pos) != 1 {
			return usageError{usage}
		}
		dev, seqStr, _ := strings.Cut(pos[0], "/")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil || dev == "" {
			return usageError{usage}
		}
		path := "/holds/" + url.PathEscape(dev) + "/" + strconv.FormatUint(seq, 10)
		var h ledger.Held
		if args[0] == "show" {
			err := op.getJSON(*data, path, &h)
			if errors.Is(err, errNoDaemon) {
				err = withStateFile(*data, func(st *store.Store) (err error) { h, err = ledger.New(st, ledger.Config{}).Hold(dev, seq); return err })
			}
			if err != nil {
				return err
			}
			return printHolds(e, *format, []ledger.Held{h})
		}
		if args[0] == "void" && *note == "" {
			return usageError{usage}
		}
		if err := op.postJSON(*data, path+"/"+args[0], operator.SettleRequest{Note: *note}, &h); err != nil {
			if errors.Is(err, errNoDaemon) {
				return fmt.Errorf("a %s needs the running farthingd: %w", args[0], err)
			}
			return err
		}
		if *format == "json" {
			return printJSON(e, h)
		}
		what := h.State
		if h.Repeated {
			what = "already " + h.State
		}
		fmt.Fprintf(e.stdout, "%s/%d: %s, charged %d nanos\n", h.Device, h.Seq, what, h.Charged)
		return nil
	}
	return usageError{want + ", not " + args[0]}
}

func printHolds(e *env, format string, hs []ledger.Held) error {
	rows := [][]string{{"TICKET", "ACCOUNT", "RULE", "STATE", "HELD AT", "USAGE", "CHARGED (nanos)", "NOTE"}}
	for _, h := range hs {
		var usage []string
		for _, u := range h.Usage {
			usage = append(usage, u.Meter+"="+strconv.FormatUint(u.Quantity, 10))
		}
		rows = append(rows, []string{h.Device + "/" + strconv.FormatUint(h.Seq, 10), h.Account, h.Rule, h.State,
			time.UnixMilli(h.HeldAt).UTC().Format(time.RFC3339), strings.Join(usage, " "), strconv.FormatUint(h.Charged, 10), h.Note})
	}
	return printRows(e, format, hs, rows)
}

// withStateFile runs fn on a stopped gateway's state file, read-only.
func withStateFile(data string, fn func(st *store.Store) error) error {
	st, err := store.Open(filepath.Join(data, gateway.StateFile), store.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := ledger.CheckSchema(st); err != nil {
		return err
	}
	return fn(st)
}
