package ledger

import (
	"errors"
	"fmt"
	"os"
)

// VerifyEnv names the environment variable of verify mode: with
// FARTHING_VERIFY=1 the daemon reconciles its books after every commit,
// before any receipt of the commit goes out, and stops (panics) the
// moment they do not add up. It reads the whole state file per commit:
// for tests (the crash and end-to-end tests run with it on) and for
// chasing a suspicion, not for production.
const VerifyEnv = "FARTHING_VERIFY"

// VerifyMode reports whether verify mode is on.
func VerifyMode() bool { return os.Getenv(VerifyEnv) == "1" }

// ErrUnbalanced: the books' three ways of adding up the money disagree
// (see ReconcileReport).
var ErrUnbalanced = errors.New("ledger: the books do not reconcile")

// Reconcile reads the state file once and returns ErrUnbalanced, wrapped
// with the figures, when receipts, ledger, windows and balances disagree.
func (bk *Books) Reconcile() error {
	rep, err := bk.Inspect(nil)
	if err != nil {
		return err
	}
	if rc := rep.Reconcile; !rc.Balanced {
		return fmt.Errorf("%w: receipts %d, ledger %d, windows %d open + %d late + %d sealed; opening %d + top-ups %d + adjustments %d - ledger = balances %d; reserved %d, by grants %d",
			ErrUnbalanced, rc.ReceiptsCharged, rc.LedgerCharged, rc.WindowsOpen, rc.WindowsLate, rc.WindowsSealed, rc.Opening, rc.TopUps, rc.Adjustments, rc.Balances, rc.Reserved, rc.Grants.Reserved)
	}
	return nil
}
