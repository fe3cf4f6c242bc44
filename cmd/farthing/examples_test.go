package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// exampleArgs splits an example as a shell would (quotes, a trailing
// "# comment"), without the leading "farthing".
func exampleArgs(ex string) []string {
	if i := strings.Index(ex, "   #"); i >= 0 {
		ex = ex[:i]
	}
	var args []string
	var cur strings.Builder
	quote, in := rune(0), false
	for _, r := range ex {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote, in = r, true
		case quote == 0 && r == ' ':
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		args = append(args, cur.String())
	}
	return args[1:]
}

// fileArg is a path an example names: one with a file's extension.
var fileArg = regexp.MustCompile(`[A-Za-z0-9_./-]+\.(yaml|key|pub|cbor|db|txt|json|png|csv)\b`)

// exampleFiles splits the files an example names into those it reads and
// those it writes (--out, --json, --plot, --csv, --fleet, a backup's file, and
// keygen's --out DIR/NAME.key and .pub).
func exampleFiles(args []string) (reads, writes []string) {
	if len(args) > 0 && args[0] == "keygen" {
		dir, name := ".", "device"
		for i := 1; i+1 < len(args); i++ {
			switch args[i] {
			case "--out":
				dir = args[i+1]
			case "--name":
				name = args[i+1]
			}
		}
		return nil, []string{filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")}
	}
	for i, a := range args {
		for _, f := range fileArg.FindAllString(a, -1) {
			out := i > 0 && slices.Contains([]string{"--out", "--json", "--plot", "--csv", "--fleet"}, args[i-1])
			if args[0] == "backup" && i == 1 {
				out = true
			}
			if out {
				writes = append(writes, f)
			} else {
				reads = append(reads, f)
			}
		}
	}
	return reads, writes
}

// TestHelpExamplesRun keeps the rules of examples: every example's flags
// and arguments parse; every file it reads exists in the repository, is
// written by another example, is installed by the package (/etc/farthing),
// is made by the README's gateway
// (farthing-data/…) or by a device's firmware (a payword commitment);
// and the examples that need no running gateway are run, in a directory
// of their own, and succeed.
func TestHelpExamplesRun(t *testing.T) {
	root, _ := filepath.Abs("../..")
	written := map[string]bool{}
	for _, exs := range examples {
		for _, ex := range exs {
			_, w := exampleFiles(exampleArgs(ex))
			for _, f := range w {
				written[f] = true
			}
		}
	}
	parseOnly = true
	for name, exs := range examples {
		for _, ex := range exs {
			args := exampleArgs(ex)
			if _, _, errOut := farthing(t, nil, args...); !strings.Contains(errOut, errParsed.Error()) && !slices.Contains([]string{"help", "version"}, args[0]) {
				t.Errorf("%s: example %q does not parse: %s", name, ex, errOut)
			}
			reads, _ := exampleFiles(args)
			for _, f := range reads {
				inRepo := strings.Replace(f, "/etc/farthing/", "packaging/", 1) // what the package installs there
				_, err := os.Stat(filepath.Join(root, inRepo))
				if err != nil && !written[f] && !strings.HasPrefix(f, "farthing-data/") && !strings.HasSuffix(f, ".chain1.cbor") {
					t.Errorf("%s: example %q reads %s, which nothing makes", name, ex, f)
				}
			}
		}
	}
	parseOnly = false

	dir := t.TempDir()
	for _, d := range []string{"metering", "provider"} {
		if err := os.Symlink(filepath.Join(root, d), filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "farthing-receiver"), 0o700)
	t.Chdir(dir)
	for _, name := range []string{"keygen", "ticket", "decode", "verify", "tariff check", "tariff quote", "voucher",
		"payouts run", "payouts list", "payouts report", "payouts statement", "receive report", "version", "help"} {
		for _, ex := range examples[name] {
			args := exampleArgs(ex)
			if slices.Contains(args, "--next") || slices.Contains(args, "redeem") {
				continue // asks a running gateway
			}
			if code, out, errOut := farthing(t, nil, args...); code != 0 {
				t.Errorf("%s: example %q: exit %d\n%s%s", name, ex, code, out, errOut)
			}
		}
	}
}
