package gateway_test

import (
	"flag"
	"os"
	"testing"

	"github.com/farthing-iot/farthing/gateway/ledger"
)

// TestMain runs the gateway's end-to-end tests in verify mode: every
// gateway they start reconciles its books after each commit and panics
// if they do not add up. A run with -test.bench measures the gateway as
// it runs in production, without it.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Setenv(ledger.VerifyEnv, "1")
	}
	os.Exit(m.Run())
}
