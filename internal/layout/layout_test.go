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

// The rules of DESIGN.md's package table: one direction of dependency,
// cmd → gateway → metering, protocol; devicefw → protocol; the provider
// side never the gateway; metering does no I/O; the simulator does not
// link the daemon's broker, store or metrics.
var rules = []rule{
	{"protocol", []string{mod + "/gateway", mod + "/metering", mod + "/devicefw", mod + "/provider", mod + "/internal", mod + "/cmd",
		mod + "/protocol/strict", "github.com/", "golang.org/", "go.", "os", "net", "reflect"},
		"the wire format: std only (and its own firmware SHA-256, protocol/internal/tinysha), no I/O, no reflection (TinyGo)"},
	{"protocol/strict", []string{mod + "/metering", mod + "/gateway", mod + "/devicefw", mod + "/provider", mod + "/internal", mod + "/cmd"}, "the gateway's decoder imports only protocol"},
	{"devicefw", []string{mod + "/gateway", mod + "/metering", mod + "/provider", mod + "/internal", "github.com/", "net", "reflect", "os"}, "firmware: protocol and std only"},
	{"devicefw/...", []string{mod + "/gateway", mod + "/metering", mod + "/provider", mod + "/internal", mod + "/cmd"}, "device adapters: protocol and their transport"},
	{"metering", []string{mod + "/gateway", mod + "/protocol", mod + "/devicefw", mod + "/provider", mod + "/internal", "os", "net", "io/fs", "syscall", "time/tzdata"}, "pure money logic: no I/O"},
	{"gateway/...", []string{mod + "/cmd", mod + "/provider", mod + "/internal/sim", mod + "/internal/demo", mod + "/internal/bench", mod + "/devicefw"}, "the daemon imports down only"},
	{"gateway/registry", []string{"github.com/mochi-mqtt", "github.com/nats-io", "github.com/prometheus", "go.etcd.io/bbolt", mod + "/gateway/store"}, "provisioning links no broker, store or metrics"},
	{"provider", []string{mod + "/gateway", mod + "/cmd", mod + "/internal/sim", mod + "/internal/demo", mod + "/internal/bench", mod + "/devicefw"}, "the provider side never imports the gateway"},
	{"internal/sim", []string{mod + "/gateway/store", mod + "/gateway/mqtt", mod + "/gateway/coaps", "github.com/mochi-mqtt", "github.com/nats-io", "github.com/prometheus", "go.etcd.io/bbolt"}, "the simulator is a fleet of devices, not a daemon"},
	{"internal/keyfile", []string{mod + "/gateway", mod + "/cmd", mod + "/provider"}, "key files are below everyone who reads them"},
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
	for _, r := range rules {
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
	// Nothing imports a command.
	for path, p := range pkgs {
		for _, dep := range p.Deps {
			if strings.HasPrefix(dep, mod+"/cmd/") {
				t.Errorf("%s imports the command %s", path, dep)
			}
		}
	}
}
