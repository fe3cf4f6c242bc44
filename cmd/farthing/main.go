// Command farthing is Farthing's operator tool: it makes keys, makes and
// inspects tickets, and checks signatures.
//
//	farthing keygen --type ed25519|hmac --out DIR
//	farthing ticket --key FILE --device ID --seq N --reading METER=VALUE [--reading ...] [--out FILE]
//	farthing decode [FILE]
//	farthing verify --pub FILE [FILE]
//	farthing tariff check FILE
//	farthing tariff quote --tariffs FILE --tariff ID --from REGISTER --to REGISTER --at TIME
//	farthing device add|list|credentials|disable|enable|remove …
//	farthing sim [--devices N --rate R --duration D --type hmac|ed25519]
//	farthing demo
//	farthing inspect [--data DIR]
//	farthing account topup ACCOUNT AMOUNT --ref REF | list | show ACCOUNT | entries ACCOUNT [--since T]
//	farthing voucher issue --key ISSUER.key --id ID --account A --amount AMOUNT --expires T | redeem TEXT
//	farthing proof --ticket DEVICE/SEQ [--data DIR]
//	farthing receive --trust GATEWAY.pub --http ADDR|--mqtt URL|--jetstream URL [--payouts FILE] | report [--data DIR]
//	farthing payouts run --policy FILE | list | report | statement [--from D --to D --account A] [--data DIR]
//
// Every command refuses bad input with a one-line error on stderr and exit
// status 2.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // tariffs name IANA zones; do not depend on the host's

	"github.com/farthing-iot/farthing/internal/version"
)

// exitBad is the exit status for bad input and failed checks.
const exitBad = 2

type command struct {
	name, usage string
	run         func(env *env, args []string) error
}

var commands = []command{
	{"keygen", "--type ed25519|hmac --out DIR [--name NAME]", runKeygen},
	{"ticket", "--key FILE --device ID --seq N --reading METER=VALUE [--reading ...] [--time MS] [--epoch N] [--account ID] [--session ID] [--out FILE] [--hex] | --next --device ID --add METER=AMOUNT... [--data DIR]", runTicket},
	{"decode", "[FILE]", runDecode},
	{"verify", "--pub FILE [FILE]", runVerify},
	{"tariff", "check FILE | quote --tariffs FILE --tariff ID --from REGISTER --to REGISTER --at TIME [--since TIME] [--used N] | versions [--format table|json] [--data DIR]", runTariff},
	{"device", "add --id ID|--count N [--prefix P] --type hmac|ed25519 --account A --provider P --tariff METER=TARIFF... [--data DIR] | list [--data DIR] | credentials --id ID [--data DIR] | disable|enable|remove|revoke --id ID [--data DIR] | rotate --id ID [--pub FILE|HEX] [--overlap D] [--commit] | rules --id ID --meter M [--set RULES] | resume --id ID | commit --id ID --commitment FILE", runDevice},
	{"sim", "[--transport mqtt|coaps] [--broker URL] [--coap ADDR] [--data DIR] [--devices N] [--type hmac|ed25519|any] [--rate R] [--duration D] [--inflight N|A-B] [--slice D] [--bare] [--payword] [--hold D] [--json]", runSim},
	{"demo", "[--rate R] [--duration D]", runDemo},
	{"inspect", "[--data DIR]", runInspect},
	{"voucher", "issue --key ISSUER.key --id ID --account A --amount \"5.00 EUR\" --expires T [--issuer NAME] [--out FILE] | redeem TEXT [--data DIR]", runVoucher},
	{"account", "topup ACCOUNT AMOUNT --ref REF | list | show ACCOUNT | entries ACCOUNT [--since T] [--format table|csv|json] [--data DIR]", runAccount},
	{"quarantine", "list [--state held|released|voided|all] [--device D] | show DEVICE/SEQ | release DEVICE/SEQ [--note WHY] | void DEVICE/SEQ --note WHY [--data DIR]", runQuarantine},
	{"bench", "[--pin] [--only l1,l2,l3,hmac,ed25519,payword,coap,mosquitto,memory,wear] [--runs N] [--duration D] [--wear-duration D] [--half-duration D] [--devices N] [--inflight N|A-B] [--pprof ADDR] [--json FILE] [--plot FILE] | --soak D [--rate R] [--devices N] [--pin] [--csv FILE] [--plot FILE]", runBench},
	{"backup", "FILE [--data DIR]", runBackup},
	{"restore", "FILE [--data DIR] [--key gateway.key]", runRestore},
	{"compact", "[--data DIR]", runCompact},
	{"proof", "--ticket DEVICE/SEQ [--data DIR] | --ticket DEVICE/SEQ --audit FILE|DIR [--pub gateway.key.pub]", runProof},
	{"payouts", "run --policy FILE | list | report | statement [--from D] [--to D] [--account A] [--data DIR | --db postgres://…] [--format table|csv|json]", runPayouts},
	{"fleet", "push tariff|adjust|revoke-voucher|revoke-device|provision (--gateway ID | --group NAME) … | status [--format table|json] [--receiver URL --token-file F] | device-master --root FILE --device ID", runFleet},
	{"version", "", runVersion},
	{"help", "COMMAND [SUBCOMMAND]", nil},
	{"receive", "--trust GATEWAY.pub (--http ADDR | --mqtt URL | --jetstream URL) [--data DIR | --db postgres://…] [--metrics ADDR] | report [--data DIR]", runReceive},
}

// env is what a command may touch, so tests run commands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

// usageError is a mistake in how a command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, e *env) int {
	if len(args) == 0 || isHelp(args[0]) {
		printUsage(e.stderr)
		if len(args) == 0 {
			return exitBad
		}
		return 0
	}
	if args[0] == "help" { // farthing help COMMAND [SUBCOMMAND] is COMMAND [SUBCOMMAND] --help
		if len(args) == 1 || isHelp(args[1]) || args[1] == "help" {
			printUsage(e.stdout)
			printExamples(e.stdout, "help")
			return 0
		}
		return run(append(append([]string(nil), args[1:]...), "--help"), e)
	}
	for _, c := range commands {
		if c.name != args[0] || c.run == nil {
			continue
		}
		err := c.run(e, args[1:])
		if len(args) > 1 && isHelp(args[1]) && !errors.Is(err, flag.ErrHelp) {
			err = flag.ErrHelp // a command with subcommands: its usage lists them
		}
		if err == nil {
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(e.stdout, "usage: farthing %s %s\n", c.name, c.usage)
			name := c.name
			var h helpError
			if errors.As(err, &h) {
				name = h.command
				if h.flags != "" {
					fmt.Fprintf(e.stdout, "\nflags of farthing %s:\n%s", h.command, h.flags)
				}
			}
			printExamples(e.stdout, name)
			return 0
		}
		msg := err.Error()
		if _, ok := err.(usageError); ok {
			msg += fmt.Sprintf("; see farthing %s --help", c.name)
		}
		fmt.Fprintf(e.stderr, "farthing %s: %s\n", c.name, oneLine(msg))
		return exitBad
	}
	fmt.Fprintf(e.stderr, "farthing: unknown command %q; see farthing --help (commands: %s)\n", args[0], names())
	return exitBad
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// helpError is --help on a command or subcommand: its flags, each with
// its default.
type helpError struct{ command, flags string }

func (h helpError) Error() string { return "help requested" }
func (h helpError) Unwrap() error { return flag.ErrHelp }

// runVersion prints the build's version.
func runVersion(e *env, args []string) error {
	if err := parse(newFlags("version"), args, 0); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, version.String("farthing"))
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: farthing COMMAND [flags]   (farthing help COMMAND, or COMMAND --help, lists its flags)")
	for _, c := range commands {
		fmt.Fprintf(w, "  farthing %s %s\n", c.name, c.usage)
	}
}

func names() string {
	var n []string
	for _, c := range commands {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// newFlags returns a flag set that reports errors instead of printing them.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseOnly makes parse end a command once its arguments are read and
// good, with errParsed, before it does anything: how a test checks that
// an example's flags are right without running it.
var parseOnly bool

var errParsed = errors.New("arguments parsed")

// parse parses flags and refuses stray arguments beyond max.
func parse(fs *flag.FlagSet, args []string, max int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
			return helpError{command: fs.Name(), flags: b.String()}
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > max {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(max))}
	}
	if parseOnly {
		return errParsed
	}
	return nil
}
