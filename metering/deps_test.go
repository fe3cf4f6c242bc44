package metering_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestNoIO: metering is pure logic. It may not import the packages through
// which a program reaches files, the network, the clock's ticking or other
// processes.
func TestNoIO(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(gobin, "list", "-f", `{{join .Imports " "}}`, "github.com/farthing-iot/farthing/metering").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range strings.Fields(string(out)) {
		switch {
		case imp == "os", imp == "io/fs", imp == "net", strings.HasPrefix(imp, "net/"), imp == "os/exec", imp == "syscall",
			imp == "log", imp == "log/slog", imp == "sync", strings.HasPrefix(imp, "github.com/farthing-iot/farthing/"):
			t.Errorf("metering imports %s", imp)
		}
	}
}
