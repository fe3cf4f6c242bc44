package gateway_test

import (
	"os"
	"testing"

	"github.com/farthing-iot/farthing/gateway/ledger"
)

// TestMain runs the gateway's end-to-end tests in verify mode: every
// gateway they start reconciles its books after each commit and panics
// if they do not add up.
func TestMain(m *testing.M) {
	os.Setenv(ledger.VerifyEnv, "1")
	os.Exit(m.Run())
}
