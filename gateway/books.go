package gateway

import (
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
)

// The books live in package ledger; these names keep the gateway's view
// of them (inspect, proofs) as the CLI and providers know it.
type (
	// Report is what `farthing inspect` shows (ledger.Report).
	Report = ledger.Report
	// DeviceReport is one device's progress (ledger.DeviceReport).
	DeviceReport = ledger.DeviceReport
	// AccountReport is one account's ledger (ledger.AccountReport).
	AccountReport = ledger.AccountReport
	// WindowReport is an open or sealed window (ledger.WindowReport).
	WindowReport = ledger.WindowReport
	// ReconcileReport adds the money up three ways (ledger.ReconcileReport).
	ReconcileReport = ledger.ReconcileReport
	// Proof is a ticket's inclusion proof (ledger.Proof).
	Proof = ledger.Proof
)

// ErrNoProof: the ticket is unknown, pruned, or its window is not sealed
// yet (ledger.ErrNoProof).
var ErrNoProof = ledger.ErrNoProof

// Inspect reads the state file in one transaction (ledger.Inspect); snap
// may be nil.
func Inspect(st *store.Store, snap *Snapshot) (*Report, error) {
	if snap == nil {
		return ledger.Inspect(st, nil)
	}
	return ledger.Inspect(st, &snap.Terms)
}

// TicketProofs returns a ticket's inclusion proofs (ledger.TicketProofs).
func TicketProofs(st *store.Store, device string, seq uint64) ([]Proof, error) {
	return ledger.TicketProofs(st, device, seq)
}

// StoredTicket returns what the state file keeps of an accepted ticket
// (ledger.StoredTicket).
func StoredTicket(st *store.Store, device string, seq uint64) (charged uint64, raw []byte, ok bool) {
	return ledger.StoredTicket(st, device, seq)
}
