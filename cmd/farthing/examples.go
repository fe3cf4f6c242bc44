package main

import (
	"fmt"
	"io"
	"strings"
)

// examples are what --help shows after the flags, by command or
// "command subcommand"; a subcommand without its own shows its
// command's. Every command has at least one (a rule TestEveryHelpHasAnExample
// keeps); every example's flags parse and every file it reads exists in
// the repository, is made by another example, by the README's gateway
// (farthing-data/…) or by a device's firmware (rules TestHelpExamplesRun
// keeps, running the examples that need no gateway).
var examples = map[string][]string{
	"keygen": {"farthing keygen --type ed25519 --out keys --name plug-1"},
	"ticket": {
		"farthing ticket --key keys/plug-1.key --device plug-1 --seq 1 --reading energy_wh=1200 --out t.cbor",
		"farthing ticket --next --data farthing-data --device plug-0001 --add energy_wh=250 --out t.cbor   # the device's next seq, epoch and register",
	},
	"decode":          {"farthing decode t.cbor"},
	"verify":          {"farthing verify --pub keys/plug-1.pub t.cbor"},
	"tariff":          {"farthing tariff check metering/testdata/tariffs.yaml"},
	"tariff check":    {"farthing tariff check metering/testdata/tariffs.yaml"},
	"tariff versions": {"farthing tariff versions --data farthing-data"},
	"fleet": {
		"farthing fleet push tariff --group berlin --file metering/testdata/tariffs.yaml --effective 2027-01-01T00:00:00Z --id tariffs-2027 --token-file fleet.token",
		"farthing fleet status --token-file fleet.token",
	},
	"fleet push": {
		"farthing fleet push tariff --group berlin --file metering/testdata/tariffs.yaml --effective +24h --id tariffs-2027 --token-file fleet.token",
		"farthing fleet push adjust --gateway gw-1 --account household --amount -2.00 --currency EUR --reason double_redemption --voucher V-0042 --ref double-V-0042 --token-file fleet.token",
		"farthing fleet push revoke-voucher --group berlin --token-file fleet.token V-0042 V-0043",
		"farthing fleet push revoke-device --gateway gw-1 --token-file fleet.token 4b213fbf40dfd967",
		"farthing fleet push provision --gateway gw-1 --device evse-9 --public-key keys/plug-1.pub --account fleet --provider stadtwerk --tariff energy_wh=evse-dc --token-file fleet.token",
	},
	"fleet status":        {"farthing fleet status --receiver http://127.0.0.1:8091 --token-file fleet.token --format json"},
	"fleet device-master": {"farthing fleet device-master --root keys/device-root.secret --device evse-9"},
	"tariff quote": {
		"farthing tariff quote --tariffs metering/testdata/tariffs.yaml --tariff evse-dc --from 0 --to 22000 --at 2026-03-02T19:30:00+01:00",
	},
	"device": {
		"farthing device add --count 3 --prefix plug- --account household --provider stadtwerk --tariff energy_wh=plug-home",
		"farthing device list",
	},
	"device add": {
		"farthing device add --id charger-7 --type ed25519 --account fleet --provider stadtwerk --tariff energy_wh=evse-dc",
		"farthing device add --id plug-9 --account household --provider stadtwerk --tariff energy_wh=plug-home --data /var/lib/farthing --config /etc/farthing/farthingd.yaml   # no gateway running",
		"farthing device add --count 100 --prefix plug- --account household --provider stadtwerk --tariff energy_wh=plug-home",
	},
	"device list":        {"farthing device list --data farthing-data"},
	"device credentials": {"farthing device credentials --id plug-0001"},
	"device disable":     {"farthing device disable --id plug-0001"},
	"device enable":      {"farthing device enable --id plug-0001"},
	"device remove":      {"farthing device remove --id plug-0001"},
	"device revoke":      {"farthing device revoke --id plug-0001"},
	"device rotate": {"farthing keygen --type ed25519 --out charger-7 --name next   # on the device: charger-7/next.pub",
		"farthing device rotate --id charger-7 --pub charger-7/next.pub --overlap 24h", "farthing device rotate --id charger-7 --commit"},
	"device rules":  {"farthing device rules --id plug-0001 --meter energy_wh --set 'max_rate: 3600000/h, max_jump: 50000'"},
	"device resume": {"farthing device resume --id plug-0001"},
	"device commit": {"farthing device commit --id plug-0001 --commitment plug-0001.chain1.cbor   # the commitment the device's firmware made and signed"},
	"sim": {
		"farthing sim --rate 20 --duration 10s",
		"farthing sim --transport coaps --devices 10 --rate 50 --duration 5s --json",
		"farthing sim --payword --type hmac --rate 100 --duration 10s   # hash-chain tickets",
		"farthing sim --fleet fleet.json --rate 20 --duration 1m   # firmware-like: goes on across gateway restarts and the next run",
	},
	"demo":    {"farthing demo", "farthing demo --rate 400 --duration 10s"},
	"inspect": {"farthing inspect --data farthing-data"},
	"voucher": {
		"farthing keygen --type ed25519 --out issuer --name issuer   # issuer/issuer.key, issuer/issuer.pub",
		"farthing voucher issue --key issuer/issuer.key --id V-1 --account household --amount \"5.00 EUR\" --expires 2030-01-01T00:00:00Z --out v.txt",
		"farthing voucher issue --key issuer/issuer.key --id V-2 --account household --amount \"5.00 EUR\" --expires 720h --gateway gw-site-1   # only that gateway redeems it",
		"farthing voucher redeem \"$(cat v.txt)\"",
	},
	"account": {
		"farthing account list",
		"farthing account topup household \"5.00 EUR\" --ref PAY-2026-0001",
	},
	"account topup": {"farthing account topup household \"5.00 EUR\" --ref PAY-2026-0001"},
	"account adjust": {
		"farthing account adjust household \"-5.00 EUR\" --ref FIX-2026-0001 --reason double_redemption --voucher V-1 --note \"redeemed at two sites\"",
	},
	"account list":    {"farthing account list --format csv"},
	"account show":    {"farthing account show household"},
	"account entries": {"farthing account entries household --since 2026-11-01T00:00:00Z --format csv"},
	"quarantine": {
		"farthing quarantine list",
		"farthing quarantine release plug-0001/42 --note \"meter replaced\"",
	},
	"quarantine list":    {"farthing quarantine list --state all --device plug-0001"},
	"quarantine show":    {"farthing quarantine show plug-0001/42"},
	"quarantine release": {"farthing quarantine release plug-0001/42 --note \"meter replaced\""},
	"quarantine void":    {"farthing quarantine void plug-0001/43 --note \"test bench reading\""},
	"bench": {
		"farthing bench --pin --json bench.json --plot bench.png",
		"farthing bench --only hmac --runs 1 --duration 5s",
	},
	"backup":  {"farthing backup farthing-backup.db --data farthing-data"},
	"restore": {"farthing restore farthing-backup.db --data farthing-data-restored"},
	"compact": {"farthing compact --data farthing-data"},
	"proof":   {"farthing proof --ticket plug-0001/1 --data farthing-data"},
	"payouts": {
		"farthing payouts run --policy provider/testdata/payouts.yaml --data farthing-receiver",
		"farthing payouts report --data farthing-receiver",
	},
	"payouts run":       {"farthing payouts run --policy provider/testdata/payouts.yaml --data farthing-receiver"},
	"payouts list":      {"farthing payouts list --data farthing-receiver"},
	"payouts report":    {"farthing payouts report --data farthing-receiver"},
	"payouts statement": {"farthing payouts statement --account stadtwerk --from 2026-11-01 --to 2026-12-01 --format csv --data farthing-receiver"},
	"version":           {"farthing version"},
	"help":              {"farthing help device add"},
	"receive": {
		"farthing receive --trust farthing-data/gateway.key.pub --http 127.0.0.1:8080 --data farthing-receiver",
		"farthing receive report --data farthing-receiver",
	},
	"receive report": {"farthing receive report --data farthing-receiver"},
}

// printExamples writes the examples of name (or of its command).
func printExamples(w io.Writer, name string) {
	ex := examples[name]
	if ex == nil {
		cmd, _, _ := strings.Cut(name, " ")
		ex = examples[cmd]
	}
	if len(ex) == 0 {
		return
	}
	fmt.Fprintln(w, "\nexamples:")
	for _, e := range ex {
		fmt.Fprintln(w, "  "+e)
	}
}
