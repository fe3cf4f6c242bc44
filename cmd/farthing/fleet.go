package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// runFleet is `farthing fleet`: push commands to a provider's gateways
// through its receiver, and see which gateway applied what.
func runFleet(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"fleet push ACTION … | status | device-master"}
	}
	switch args[0] {
	case "push":
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			fs := newFlags("fleet push")
			var p pushFlags
			p.flags(fs)
			if err := parse(fs, args[1:], 0); err != nil {
				return err
			}
			return usageError{"fleet push tariff|adjust|revoke-voucher|revoke-device|provision …"}
		}
		return fleetPush(e, args[1], args[2:])
	case "status":
		return fleetStatus(e, args[1:])
	case "device-master":
		return fleetDeviceMaster(e, args[1:])
	}
	return usageError{fmt.Sprintf("unknown fleet command %q", args[0])}
}

// fleetClient is how farthing fleet reaches the receiver's fleet API.
type fleetClient struct {
	receiver, tokenFile string
}

func (c *fleetClient) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.receiver, "receiver", "http://127.0.0.1:8091", "the receiver's fleet API (farthing receive --fleet-http)")
	fs.StringVar(&c.tokenFile, "token-file", "", "a file (0600) holding the fleet token (farthing receive --fleet-token-file)")
}

// do sends one request and decodes the JSON answer into out.
func (c *fleetClient) do(method, path string, body any, out any) error {
	if c.tokenFile == "" {
		return usageError{"--token-file is required"}
	}
	tok, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.receiver, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the receiver answered %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// pushFlags are what every push takes: the target, an id, the validity.
type pushFlags struct {
	fleetClient
	gateway, group, id string
	expiry             time.Duration
}

func (p *pushFlags) command(action string) (protocol.Command, error) {
	c := protocol.Command{Action: action, ID: p.id, Target: p.gateway}
	switch {
	case (p.gateway == "") == (p.group == ""):
		return c, usageError{"give one of --gateway ID or --group NAME"}
	case p.group != "":
		c.Target, c.Group = p.group, true
	}
	if p.expiry > 0 {
		now := time.Now()
		c.NotBefore, c.Expiry = uint64(now.UnixMilli()), uint64(now.Add(p.expiry).UnixMilli())
	}
	return c, nil
}

// fleetPush pushes one command.
func fleetPush(e *env, action string, args []string) error {
	fs := newFlags("fleet push " + action)
	var p pushFlags
	p.flags(fs)
	fs.StringVar(&p.gateway, "gateway", "", "the gateway the command is for")
	fs.StringVar(&p.group, "group", "", "the fleet group the command is for (every gateway in control.groups)")
	fs.StringVar(&p.id, "id", "", "the command's id (default: made up; a tariff's version is named by it)")
	fs.DurationVar(&p.expiry, "expiry", 0, "how long the command stays valid (default the receiver's: 7 days)")
	build, max, err := pushAction(fs, action)
	if err != nil {
		return err
	}
	if err := parse(fs, args, max); err != nil {
		return err
	}
	c, err := p.command(protocolAction(action))
	if err == nil {
		err = build(&c, fs.Args())
	}
	if err != nil {
		return err
	}
	var pushed protocol.Command
	if err := p.do(http.MethodPost, "/fleet/commands", c, &pushed); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "pushed %s: %s to %s, seq %d, valid until %s\n", pushed.ID, pushed.Action, targetName(pushed.Target, pushed.Group),
		pushed.Seq, time.UnixMilli(int64(pushed.Expiry)).UTC().Format(time.RFC3339))
	return nil
}

func protocolAction(a string) string {
	return strings.ReplaceAll(strings.Replace(a, "tariff", "tariff_set", 1), "-", "_")
}

func targetName(t string, group bool) string {
	if group {
		return "group " + t
	}
	return "gateway " + t
}

// pushAction adds an action's flags to fs and returns what fills its
// fields in, with how many arguments it takes.
func pushAction(fs *flag.FlagSet, action string) (func(*protocol.Command, []string) error, int, error) {
	switch action {
	case "tariff":
		file := fs.String("file", "", "the new tariff file (every tariff the gateways' devices use)")
		effective := fs.String("effective", "", "when it takes effect: RFC 3339, or +DURATION from now; usage before it keeps the old prices")
		return func(c *protocol.Command, _ []string) error {
			b, err := os.ReadFile(*file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			if _, err := metering.ParseTariffs(*file, b); err != nil {
				return err
			}
			at, err := parseWhen(*effective)
			if err != nil {
				return usageError{"--effective: a date, RFC 3339 (2027-01-01T00:00:00Z) or +DURATION"}
			}
			c.Tariffs, c.Effective = string(b), uint64(at.UnixMilli())
			return nil
		}, 0, nil
	case "adjust":
		account := fs.String("account", "", "the account")
		amount := fs.String("amount", "", "the amount, a decimal (negative takes money back)")
		currency := fs.String("currency", "", "its currency")
		reason := fs.String("reason", "", "a reason code (double_redemption, goodwill, correction, …)")
		ref := fs.String("ref", "", "the reference the adjustment is booked once by")
		voucher := fs.String("voucher", "", "the voucher it settles, if any")
		return func(c *protocol.Command, _ []string) error {
			n, err := metering.ParseNanos(*amount)
			if err != nil {
				return err
			}
			c.Account, c.Amount, c.Currency, c.Reason, c.Ref, c.Voucher = *account, int64(n), *currency, *reason, *ref, *voucher
			return nil
		}, 0, nil
	case "revoke-voucher":
		return func(c *protocol.Command, ids []string) error {
			c.Vouchers = ids
			return nil
		}, protocol.MaxCommandList, nil
	case "revoke-device":
		return func(c *protocol.Command, kids []string) error {
			for _, k := range kids {
				b, err := hex.DecodeString(k)
				if err != nil || len(b) != protocol.KeyIDLen {
					return usageError{fmt.Sprintf("%q: want a key id, %d bytes in hex", k, protocol.KeyIDLen)}
				}
				c.KeyIDs = append(c.KeyIDs, b)
			}
			return nil
		}, protocol.MaxCommandList, nil
	case "provision":
		return provisionAction(fs), 0, nil
	}
	return nil, 0, usageError{fmt.Sprintf("unknown action %q: tariff, adjust, revoke-voucher, revoke-device or provision", action)}
}

// provisionAction adds provision's flags.
func provisionAction(fs *flag.FlagSet) func(*protocol.Command, []string) error {
	device := fs.String("device", "", "the device's id")
	pub := fs.String("public-key", "", "its Ed25519 public key (a PEM file, or hex)")
	account := fs.String("account", "", "its account")
	prov := fs.String("provider", "", "its provider")
	tariffs := meterTariffs{}
	fs.Var(tariffs, "tariff", "METER=TARIFF; repeatable")
	return func(c *protocol.Command, _ []string) error {
		key, err := hex.DecodeString(*pub)
		if err != nil {
			k, lerr := keyfile.Load(*pub)
			if lerr != nil || k.Public == nil {
				return usageError{"--public-key: want an Ed25519 public key file or its hex"}
			}
			key = k.Public
		}
		c.Device, c.PublicKey, c.Account, c.Provider = *device, key, *account, *prov
		for _, m := range slices.Sorted(maps.Keys(tariffs)) {
			c.Meters = append(c.Meters, protocol.MeterTerms{Meter: m, Tariff: tariffs[m]})
		}
		return nil
	}
}

// fleetStatus prints which gateway applied which command.
func fleetStatus(e *env, args []string) error {
	fs := newFlags("fleet status")
	var c fleetClient
	c.flags(fs)
	format := fs.String("format", "table", "table or json")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var st provider.FleetStatus
	if err := c.do(http.MethodGet, "/fleet/status", nil, &st); err != nil {
		return err
	}
	if *format == "json" {
		return printJSON(e, st)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "COMMAND\tACTION\tTARGET\tSEQ\tAPPLIED\tREFUSED\tPENDING")
	for _, cs := range st.Commands {
		var refused []string
		for g, r := range cs.Refused {
			refused = append(refused, g+" ("+r+")")
		}
		sort.Strings(refused)
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", cs.ID, cs.Action, targetName(cs.Target, cs.Group), cs.Seq, list(cs.Applied),
			list(refused), list(cs.Pending))
	}
	w.Flush()
	for _, a := range st.Foreign {
		fmt.Fprintf(e.stdout, "NOT PUSHED HERE: %s answered %s (%s, %s seq %d): %s\n", a.Gateway, a.Command, a.Action, a.Target, a.Number,
			map[bool]string{true: "refused " + a.Reason.String(), false: "applied"}[a.Refused])
	}
	for _, l := range st.Local {
		fmt.Fprintf(e.stdout, "LOCAL CHANGE at %s: %s (%s) at %s\n", l.Gateway, l.Command, l.Action, time.UnixMilli(int64(l.Time)).UTC().Format(time.RFC3339))
	}
	var behind []string
	for g := range st.Behind {
		behind = append(behind, g)
	}
	sort.Strings(behind)
	for _, g := range behind {
		fmt.Fprintf(e.stdout, "BEHIND: %s has not answered %s\n", g, strings.Join(st.Behind[g], ", "))
	}
	return nil
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// fleetDeviceMaster prints the master secret a device provisioned by
// command has: what to flash into it.
func fleetDeviceMaster(e *env, args []string) error {
	fs := newFlags("fleet device-master")
	root := fs.String("root", "", "the fleet's device root (farthing keygen --type hmac --name device-root)")
	device := fs.String("device", "", "the device's id")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	k, err := keyfile.Load(*root)
	if err != nil || k.Master == nil {
		return usageError{"--root: want a master secret file"}
	}
	m, err := protocol.DeviceMaster(k.Master, *device)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(m))
	return nil
}
