package layout

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// archPage is the repository's architecture page, relative to this
// package; its tables are the rules the tests enforce.
var archPage = filepath.Join("..", "..", "docs", "ARCHITECTURE.md")

// table returns the body rows of the first Markdown table after heading,
// each as its trimmed cells.
func table(t *testing.T, heading string) [][]string {
	t.Helper()
	f, err := os.Open(archPage)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	in, started := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == heading:
			in = true
		case in && strings.HasPrefix(l, "|"):
			started = true
			cells := strings.Split(strings.Trim(l, "|"), "|")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows = append(rows, cells)
		case in && started:
			in = false // the table ended
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 {
		t.Fatalf("%s: no table under %q", archPage, heading)
	}
	return rows[2:] // the header and its separator
}

// unquote strips a cell's code quotes.
func unquote(s string) string { return strings.Trim(strings.TrimSpace(s), "`") }

// modulePaths turns a cell's comma-separated list into import paths:
// "./x" becomes this module's x, anything else stays as written.
func modulePaths(cell string) []string {
	var out []string
	for _, f := range strings.Split(cell, ",") {
		p := unquote(f)
		if p == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(p, "./"); ok {
			p = mod + "/" + rest
		}
		out = append(out, p)
	}
	return out
}

// TestArchitecturePageNamesEveryPackage: the package table of the
// architecture page covers every package of the module (a row may name
// several, or a tree with "/..."), and names none that is gone.
func TestArchitecturePageNamesEveryPackage(t *testing.T) {
	pkgs := listAll(t)
	covered := map[string]bool{}
	for _, row := range table(t, "## Packages") {
		for _, name := range strings.Split(row[0], ",") {
			name = unquote(name)
			n := 0
			for path := range pkgs {
				if matches(name, path) {
					covered[path], n = true, n+1
				}
			}
			if n == 0 {
				t.Errorf("%s names %s, which is no package", archPage, name)
			}
		}
	}
	for path := range pkgs {
		if !covered[path] && !strings.Contains(path, "/examples/") && !strings.HasSuffix(path, "/layout") {
			t.Errorf("%s is not in the package table of %s", path, archPage)
		}
	}
}

// deviceForbidden reports whether pkg may not appear anywhere in the
// device path's dependencies: a network stack, a reflection codec, the
// gateway, metering, the strict decoder or any third-party module.
func deviceForbidden(pkg string) bool {
	switch {
	case pkg == "net" || strings.HasPrefix(pkg, "net/"),
		pkg == "encoding/json", pkg == "encoding/gob", pkg == "encoding/xml",
		strings.HasPrefix(pkg, mod+"/gateway"),
		strings.HasPrefix(pkg, mod+"/metering"),
		strings.HasPrefix(pkg, mod+"/protocol/strict"),
		strings.Contains(strings.SplitN(pkg, "/", 2)[0], ".") && !strings.HasPrefix(pkg, mod+"/"):
		return true
	}
	return false
}

// TestDevicePathImports: what compiles with TinyGo imports only what its
// row of "## The device path" lists, and depends on nothing forbidden.
func TestDevicePathImports(t *testing.T) {
	pkgs := listAll(t)
	for _, row := range table(t, "## The device path") {
		path := mod + "/" + unquote(row[0])
		p, ok := pkgs[path]
		if !ok {
			t.Errorf("%s: the device path names %s, which is no package", archPage, path)
			continue
		}
		allowed := map[string]bool{}
		for _, a := range modulePaths(row[1]) {
			allowed[a] = true
		}
		for _, imp := range p.Imports {
			if !allowed[imp] {
				t.Errorf("%s imports %s, which is not on its device allow-list", path, imp)
			}
		}
		for _, dep := range p.Deps {
			if deviceForbidden(dep) {
				t.Errorf("%s depends on %s, which the device path must never use", path, dep)
			}
		}
	}
}

func TestDeviceForbiddenRule(t *testing.T) {
	for _, p := range []string{"net", "net/http", "encoding/json", "github.com/fxamacker/cbor/v2",
		mod + "/gateway/store", mod + "/protocol/strict"} {
		if !deviceForbidden(p) {
			t.Errorf("deviceForbidden(%q) = false", p)
		}
	}
	for _, p := range []string{"crypto/ed25519", "errors", mod + "/protocol"} {
		if deviceForbidden(p) {
			t.Errorf("deviceForbidden(%q) = true", p)
		}
	}
}

// TestRulesCatchAWrongImport keeps the rule reader honest: a made-up
// package of metering that imports os breaks metering's row.
func TestRulesCatchAWrongImport(t *testing.T) {
	for _, r := range rules(t) {
		if r.pkg != "metering" {
			continue
		}
		if _, bad := forbidden("os", r.forbid, true); !bad {
			t.Errorf("metering's rule %v lets it import os", r.forbid)
		}
		if _, bad := forbidden(mod+"/protocol", r.forbid, false); !bad {
			t.Errorf("metering's rule %v lets it depend on protocol", r.forbid)
		}
		return
	}
	t.Fatalf("%s has no rule for metering", archPage)
}

// TestConceptFilesExist: every file or folder the "Where a concept
// lives" table names is in the tree.
func TestConceptFilesExist(t *testing.T) {
	named := regexp.MustCompile("`([a-z][a-z0-9_./*-]+)`")
	for _, row := range table(t, "## Where a concept lives") {
		for _, m := range named.FindAllStringSubmatch(row[1], -1) {
			p := strings.TrimSuffix(strings.TrimSuffix(m[1], "*"), "/")
			if _, err := os.Stat(filepath.Join("..", "..", p)); err != nil {
				t.Errorf("%s: %q names %s, which is not in the tree", archPage, row[0], m[1])
			}
		}
	}
}
