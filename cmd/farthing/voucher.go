package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// runVoucher is `farthing voucher issue|redeem`.
//
//	farthing voucher issue --key ISSUER.key --id ID --account A --amount "5.00 EUR" --expires T [--issuer NAME] [--gateway ID] [--device ID] [--out FILE]
//	farthing voucher redeem TEXT [--data DIR]
func runVoucher(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"voucher: want issue or redeem"}
	}
	switch args[0] {
	case "issue":
		return runVoucherIssue(e, args[1:])
	case "redeem":
		fs := newFlags("voucher redeem")
		data := fs.String("data", defaultData, "the gateway's data directory")
		op := addOperatorFlags(fs)
		pos, err := parseInterspersed(fs, args[1:], 1)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageError{"voucher redeem TEXT"}
		}
		var res ledger.RedeemResult
		if err := op.postJSON(*data, "/vouchers/redeem", operator.RedeemRequest{Voucher: strings.TrimSpace(pos[0])}, &res); err != nil {
			return err
		}
		cur := metering.Currency(res.Currency)
		fmt.Fprintf(e.stdout, "%s: redeemed %s, entry %d, balance %s\n", res.Account, metering.Money{Nanos: res.Amount, Currency: cur},
			res.EntrySeq, metering.Money{Nanos: res.Balance, Currency: cur})
		return nil
	}
	return usageError{"voucher: want issue or redeem, not " + args[0]}
}

// runVoucherIssue is `farthing voucher issue`: it signs a voucher with
// the issuer's key and prints its text form.
func runVoucherIssue(e *env, args []string) error {
	fs := newFlags("voucher issue")
	keyPath := fs.String("key", "", "the issuer's Ed25519 private key (farthing keygen --type ed25519)")
	id := fs.String("id", "", "the voucher id: redeemed at most once, ever")
	account := fs.String("account", "", "the account the voucher tops up")
	amount := fs.String("amount", "", `the amount with its currency, e.g. "5.00 EUR"`)
	expires := fs.String("expires", "", "expiry: RFC 3339 time, or a duration from now (720h)")
	issuer := fs.String("issuer", "", "an issuer label carried in the voucher (optional)")
	gatewayID := fs.String("gateway", "", "bind the voucher to this gateway id: no other gateway redeems it, so it cannot be redeemed twice even offline")
	device := fs.String("device", "", "bind the voucher to this device: redeemed only when the device passes it on (a keypad, a kiosk)")
	out := fs.String("out", "", "also write the voucher's bytes to FILE")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *keyPath == "" || *id == "" || *account == "" || *amount == "" || *expires == "" {
		return usageError{"voucher issue: --key, --id, --account, --amount and --expires are required"}
	}
	k, err := keyfile.Load(*keyPath)
	if err != nil {
		return err
	}
	if k.Private == nil {
		return usageError{*keyPath + ": want an Ed25519 private key"}
	}
	m, err := metering.ParseMoney(*amount)
	if err != nil {
		return usageError{"--amount: " + err.Error()}
	}
	exp, err := parseExpiry(*expires)
	if err != nil {
		return usageError{"--expires: " + err.Error()}
	}
	if !exp.After(time.Now()) {
		return usageError{fmt.Sprintf("--expires: %s is in the past: a voucher that expired cannot be redeemed", exp.UTC().Format(time.RFC3339))}
	}
	signer, err := protocol.NewEd25519Signer(k.Private)
	if err != nil {
		return err
	}
	v := protocol.Voucher{ID: *id, Account: *account, Amount: uint64(m.Nanos), Currency: string(m.Currency), Expiry: uint64(exp.UnixMilli()),
		Issuer: *issuer, Gateway: *gatewayID, Device: *device}
	var enc protocol.Encoder
	b, err := enc.AppendVoucher(nil, &v, signer)
	if err != nil {
		return usageError{err.Error()}
	}
	if *out != "" {
		if err := os.WriteFile(*out, b, 0o600); err != nil {
			return err
		}
	}
	fmt.Fprintln(e.stdout, protocol.VoucherText(b))
	return nil
}

// parseExpiry reads an RFC 3339 time or a duration from now.
func parseExpiry(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(d), nil
	}
	return time.Parse(time.RFC3339, s)
}
