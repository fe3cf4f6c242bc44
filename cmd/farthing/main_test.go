package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veraison/go-cose"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/keyfile"
)

// farthing runs the command in-process and returns exit status and output.
func farthing(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &env{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errOut})
	return code, out.String(), errOut.String()
}

func mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	code, out, errOut := farthing(t, stdin, args...)
	if code != 0 {
		t.Fatalf("farthing %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func TestKeygenTicketDecodeVerify(t *testing.T) {
	for _, tc := range []struct{ typ, key, pub, cose string }{
		{"ed25519", "device.key", "device.pub", "COSE_Sign1"},
		{"hmac", "device.secret", "device.secret", "COSE_Mac0"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			dir := t.TempDir()
			out := mustRun(t, nil, "keygen", "--type", tc.typ, "--out", dir)
			if !strings.Contains(out, "kid: ") {
				t.Errorf("keygen printed no key id: %q", out)
			}
			fi, err := os.Stat(filepath.Join(dir, tc.key))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("secret key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
			}
			// keygen never overwrites a key.
			if code, _, _ := farthing(t, nil, "keygen", "--type", tc.typ, "--out", dir); code != exitBad {
				t.Errorf("second keygen into the same dir: exit %d; want %d", code, exitBad)
			}
			ticketPath := filepath.Join(dir, "t.cbor")
			mustRun(t, nil, "ticket", "--key", filepath.Join(dir, tc.key), "--device", "plug-7", "--seq", "12",
				"--time", "1790000000000", "--reading", "energy_wh=1500", "--reading", "on_ms=60000", "--session", "s1", "--out", ticketPath)

			var d decoded
			if err := json.Unmarshal([]byte(mustRun(t, nil, "decode", ticketPath)), &d); err != nil {
				t.Fatal(err)
			}
			if d.Kind != "ticket" || d.COSE != tc.cose || d.Ticket == nil || d.Ticket.Device != "plug-7" || d.Ticket.Seq != 12 ||
				len(d.Ticket.Readings) != 2 || d.Ticket.Readings[1].Register != 60000 || d.Ticket.Session != "s1" ||
				!strings.HasPrefix(d.Diag, map[string]string{"COSE_Sign1": "18([", "COSE_Mac0": "17(["}[tc.cose]) {
				t.Fatalf("decode = %+v", d)
			}
			if out := mustRun(t, nil, "verify", "--pub", filepath.Join(dir, tc.pub), ticketPath); !strings.HasPrefix(out, "ok: ticket device plug-7 seq 12") {
				t.Errorf("verify printed %q", out)
			}
			// decode and verify also read hex from stdin.
			raw, _ := os.ReadFile(ticketPath)
			mustRun(t, []byte(hex.EncodeToString(raw)+"\n"), "verify", "--pub", filepath.Join(dir, tc.pub))

			// Another device's key does not verify it.
			other := t.TempDir()
			mustRun(t, nil, "keygen", "--type", tc.typ, "--out", other)
			if code, _, errOut := farthing(t, nil, "verify", "--pub", filepath.Join(other, tc.pub), ticketPath); code != exitBad || !strings.Contains(errOut, "kid") {
				t.Errorf("verify with another key: exit %d, %q; want %d and a kid mismatch", code, errOut, exitBad)
			}
			// A tampered ticket does not verify with the right key.
			raw[len(raw)-1] ^= 1
			tampered := filepath.Join(dir, "bad.cbor")
			os.WriteFile(tampered, raw, 0o644)
			if code, _, errOut := farthing(t, nil, "verify", "--pub", filepath.Join(dir, tc.pub), tampered); code != exitBad || !strings.Contains(errOut, "bad_signature") {
				t.Errorf("verify tampered: exit %d, %q", code, errOut)
			}

			if tc.typ == "ed25519" {
				// The ticket verifies with go-cose, a COSE library no one here wrote.
				k, err := keyfile.Load(filepath.Join(dir, tc.pub))
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := os.ReadFile(ticketPath)
				var m cose.Sign1Message
				if err := m.UnmarshalCBOR(raw); err != nil {
					t.Fatal(err)
				}
				v, _ := cose.NewVerifier(cose.AlgorithmEdDSA, k.Public)
				if err := m.Verify(nil, v); err != nil {
					t.Fatalf("go-cose: %v", err)
				}
			}
		})
	}
}

// TestBadInput: every refusal is one line on stderr and exit status 2.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, nil, "keygen", "--type", "ed25519", "--out", dir)
	key := filepath.Join(dir, "device.key")
	notKey := filepath.Join(dir, "notakey")
	os.WriteFile(notKey, []byte("hello"), 0o600)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no command", "", nil, "usage"},
		{"unknown command", "", []string{"mint"}, "unknown command"},
		{"keygen without type", "", []string{"keygen", "--out", dir}, "--type is required"},
		{"keygen bad type", "", []string{"keygen", "--type", "rsa", "--out", dir}, "want ed25519 or hmac"},
		{"keygen without out", "", []string{"keygen", "--type", "hmac"}, "--out is required"},
		{"unknown flag", "", []string{"ticket", "--colour", "red"}, "flag provided but not defined"},
		{"ticket without key", "", []string{"ticket", "--device", "d", "--seq", "1", "--reading", "e=1"}, "--key is required"},
		{"ticket bad reading", "", []string{"ticket", "--key", key, "--device", "d", "--seq", "1", "--reading", "e"}, "METER=VALUE"},
		{"ticket negative register", "", []string{"ticket", "--key", key, "--device", "d", "--seq", "1", "--reading", "e=-1"}, "unsigned integer"},
		{"ticket no readings", "", []string{"ticket", "--key", key, "--device", "d", "--seq", "1"}, "too_many_readings"},
		{"ticket seq 0", "", []string{"ticket", "--key", key, "--device", "d", "--reading", "e=1"}, "field_range"},
		{"ticket device with slash", "", []string{"ticket", "--key", key, "--device", "a/b", "--seq", "1", "--reading", "e=1"}, "bad_name"},
		{"ticket duplicate meter", "", []string{"ticket", "--key", key, "--device", "d", "--seq", "1", "--reading", "e=1", "--reading", "e=2"}, "duplicate_meter"},
		{"ticket missing key file", "", []string{"ticket", "--key", filepath.Join(dir, "nope"), "--device", "d", "--seq", "1", "--reading", "e=1"}, "no such file"},
		{"ticket not a key", "", []string{"ticket", "--key", notKey, "--device", "d", "--seq", "1", "--reading", "e=1"}, "not a Farthing key file"},
		{"ticket public key", "", []string{"ticket", "--key", filepath.Join(dir, "device.pub"), "--device", "d", "--seq", "1", "--reading", "e=1"}, "cannot sign"},
		{"decode empty", "", []string{"decode"}, "empty"},
		{"decode garbage", "garbage", []string{"decode"}, "unexpected_tag"},
		{"decode odd hex", "d28", []string{"decode"}, "unexpected_tag"},
		{"decode two files", "", []string{"decode", "a", "b"}, "unexpected argument"},
		{"decode too big", strings.Repeat("x", maxInput+1), []string{"decode"}, "not a Farthing message"},
		{"verify without pub", "", []string{"verify"}, "--pub is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := farthing(t, []byte(tc.stdin), tc.args...)
			if code != exitBad {
				t.Errorf("exit %d; want %d", code, exitBad)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q; want it to say %q", errOut, tc.want)
			}
			if tc.args != nil && strings.Count(strings.TrimRight(errOut, "\n"), "\n") != 0 {
				t.Errorf("stderr has more than one line: %q", errOut)
			}
		})
	}
}

// Every command and subcommand answers --help with its usage and its
// flags' defaults, exit 0; `farthing help CMD SUB` is the same; a wrong
// flag is one line that points to --help.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"tariff", "--help"}, {"device", "--help"}, {"help", "device", "add"}, {"device", "add", "-h"}, {"sim", "--help"}, {"help"}} {
		code, out, errOut := farthing(t, nil, args...)
		if code != 0 || !strings.Contains(out, "usage: farthing") {
			t.Errorf("farthing %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
	_, out, _ := farthing(t, nil, "help", "device", "add")
	if !strings.Contains(out, "flags of farthing device add") || !strings.Contains(out, "-account") {
		t.Errorf("device add --help lists no flags:\n%s", out)
	}
	_, out, _ = farthing(t, nil, "sim", "--help")
	if !strings.Contains(out, `(default "1-4")`) && !strings.Contains(out, `(default "4")`) {
		t.Errorf("sim --help shows no defaults:\n%s", out)
	}
	code, _, errOut := farthing(t, nil, "sim", "--bogus")
	if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "see farthing sim --help") {
		t.Errorf("an unknown flag: exit %d, %q", code, errOut)
	}
	if out := mustRun(t, nil, "version"); !strings.HasPrefix(out, "farthing ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %q", out)
	}
}

// TestEveryHelpHasAnExample: --help on every command, and on every
// subcommand that has its own examples, ends with examples that name the
// command.
func TestEveryHelpHasAnExample(t *testing.T) {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	for name := range examples {
		names = append(names, name)
	}
	for _, name := range names {
		args := append([]string{"help"}, strings.Fields(name)...)
		code, out, errOut := farthing(t, nil, args...)
		_, ex, _ := strings.Cut(out, "\nexamples:\n")
		if code != 0 || !strings.Contains(ex, "farthing "+strings.Fields(name)[0]) {
			t.Errorf("farthing help %s: exit %d, no example of it:\n%s%s", name, code, out, errOut)
		}
	}
}

// runGateway runs an in-process gateway on data (MQTT on a free port, no
// DTLS or HTTP listener), with cfg changed by configure, until stop or the
// test's end; it returns once the gateway is ready.
func runGateway(t *testing.T, data string, configure func(*gateway.Config)) (g *gateway.Gateway, stop func()) {
	t.Helper()
	cfg, err := gateway.LoadConfigWithDataDir("", data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DTLS.Listen, cfg.HTTP.Listen, cfg.MQTT.Listen = "off", "off", "127.0.0.1:0"
	if configure != nil {
		configure(cfg)
	}
	g, err = gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	<-g.Ready()
	return g, stop
}

// paywordTerms is a gateway's configuration for the payword tests: one
// postpaid account, one provider, a tariff of 0.30 EUR/kWh in data.
func paywordTerms(data string) func(*gateway.Config) {
	os.WriteFile(filepath.Join(data, "tariffs.yaml"), []byte("tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.30 EUR, per: 1000}\n"), 0o600)
	return func(cfg *gateway.Config) {
		cfg.Accounts = []gateway.AccountConfig{{ID: "fleet", Kind: "postpaid", Currency: "EUR", CreditLimit: "1000"}}
		cfg.Providers = []gateway.ProviderConfig{{ID: "utility", Window: time.Hour}}
	}
}
