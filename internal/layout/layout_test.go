package layout

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/farthing-iot/farthing"

// rule says what the packages under one path may not import. Module and
// third-party paths are checked against every dependency, direct or not;
// standard-library names ("os", "net", "reflect") against direct imports
// only, since the standard library itself uses them underneath.
type rule struct {
	pkg    string   // a package path below the module; "x/..." for x and below
	forbid []string // import path prefixes it must not depend on
	why    string
}

// rules reads the table under "## Dependency rules" of the architecture
// page: a package, what it may not depend on ("./x" is this module's x),
// why.
func rules(t *testing.T) []rule {
	t.Helper()
	var out []rule
	for _, row := range table(t, "## Dependency rules") {
		if len(row) != 3 {
			t.Fatalf("%s: dependency rule %q has %d cells, want 3", archPage, row, len(row))
		}
		out = append(out, rule{pkg: unquote(row[0]), forbid: modulePaths(row[1]), why: row[2]})
	}
	if len(out) == 0 {
		t.Fatalf("%s has no dependency rules", archPage)
	}
	return out
}

type pkgInfo struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listAll(t *testing.T) map[string]pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkgInfo{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

func matches(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == mod+"/"+base || strings.HasPrefix(path, mod+"/"+base+"/")
	}
	return path == mod+"/"+pattern
}

// forbidden reports whether dep is one of the prefixes: a path prefix
// ("github.com/") or a whole standard-library package and its children
// ("net" forbids net and net/http, not netip's neighbours by accident).
func forbidden(dep string, prefixes []string, direct bool) (string, bool) {
	for _, f := range prefixes {
		if std := !strings.Contains(strings.SplitN(f, "/", 2)[0], "."); std != direct {
			continue // std names are checked on direct imports only
		}
		if f == "github.com/" && strings.HasPrefix(dep, mod+"/") {
			continue // third party means not this module
		}
		if strings.HasSuffix(f, "/") || strings.HasSuffix(f, ".") {
			if strings.HasPrefix(dep, f) {
				return f, true
			}
			continue
		}
		if dep == f || strings.HasPrefix(dep, f+"/") {
			return f, true
		}
	}
	return "", false
}

func TestDependencyRules(t *testing.T) {
	pkgs := listAll(t)
	for _, r := range rules(t) {
		n := 0
		for path, p := range pkgs {
			if !matches(r.pkg, path) {
				continue
			}
			n++
			for _, dep := range p.Deps {
				if f, bad := forbidden(dep, r.forbid, false); bad {
					t.Errorf("%s depends on %s (rule %q: %s)", path, dep, f, r.why)
				}
			}
			for _, imp := range p.Imports {
				if f, bad := forbidden(imp, r.forbid, true); bad {
					t.Errorf("%s imports %s (rule %q: %s)", path, imp, f, r.why)
				}
			}
		}
		if n == 0 {
			t.Errorf("rule for %s matches no package: the tree moved, move the rule", r.pkg)
		}
	}
	// Nothing imports a command (a command's own internal packages are
	// its parts, and Go keeps them to it).
	for path, p := range pkgs {
		for _, dep := range p.Deps {
			if strings.HasPrefix(dep, mod+"/cmd/") && !strings.Contains(dep, "/internal/") {
				t.Errorf("%s imports the command %s", path, dep)
			}
		}
	}
}
