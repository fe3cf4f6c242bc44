package devicefw_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The device path must compile with TinyGo on a microcontroller. These
// rules keep it so: our device packages import only what is listed here
// directly, and nothing they pull in may be a network stack, a reflection
// codec or a third-party module.
var deviceImports = map[string][]string{
	"github.com/farthing-iot/farthing/protocol": {
		"crypto/ed25519", "crypto/hkdf", "crypto/hmac", "crypto/sha256", "errors", "hash",
		"github.com/farthing-iot/farthing/protocol/internal/tinysha",
	},
	"github.com/farthing-iot/farthing/protocol/internal/tinysha": {"encoding/binary"},
	"github.com/farthing-iot/farthing/devicefw": {
		"errors", "math/bits", "github.com/farthing-iot/farthing/protocol",
	},
	"github.com/farthing-iot/farthing/devicefw/examples/smartplug": {
		"crypto/ed25519", "encoding/hex", "github.com/farthing-iot/farthing/devicefw", "github.com/farthing-iot/farthing/protocol",
	},
}

// forbidden may not appear anywhere in the device path's dependencies.
func forbidden(pkg string) bool {
	switch {
	case pkg == "net" || strings.HasPrefix(pkg, "net/"),
		pkg == "encoding/json", pkg == "encoding/gob", pkg == "encoding/xml",
		strings.HasPrefix(pkg, "github.com/farthing-iot/farthing/gateway"),
		strings.HasPrefix(pkg, "github.com/farthing-iot/farthing/metering"),
		strings.HasPrefix(pkg, "github.com/farthing-iot/farthing/protocol/strict"),
		strings.Contains(strings.SplitN(pkg, "/", 2)[0], ".") && !strings.HasPrefix(pkg, "github.com/farthing-iot/farthing/"):
		return true
	}
	return false
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(gobin, append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

func TestDevicePathImports(t *testing.T) {
	for pkg, allowed := range deviceImports {
		ok := map[string]bool{}
		for _, a := range allowed {
			ok[a] = true
		}
		for _, imp := range goList(t, "-f", `{{join .Imports " "}}`, pkg) {
			if !ok[imp] {
				t.Errorf("%s imports %s, which is not on the device allow-list", pkg, imp)
			}
		}
		for _, dep := range goList(t, "-deps", pkg) {
			if forbidden(dep) {
				t.Errorf("%s depends on %s, which the device path must never use", pkg, dep)
			}
		}
	}
}

func TestForbiddenRule(t *testing.T) {
	for _, p := range []string{"net", "net/http", "encoding/json", "github.com/fxamacker/cbor/v2",
		"github.com/farthing-iot/farthing/gateway/store", "github.com/farthing-iot/farthing/protocol/strict"} {
		if !forbidden(p) {
			t.Errorf("forbidden(%q) = false", p)
		}
	}
	for _, p := range []string{"crypto/ed25519", "errors", "github.com/farthing-iot/farthing/protocol"} {
		if forbidden(p) {
			t.Errorf("forbidden(%q) = true", p)
		}
	}
}
