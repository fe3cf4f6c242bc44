package devicefw

import "errors"

// Errors returned by a Client. Protocol refusals (a receipt that does not
// parse or verify) are *protocol.Error values instead.
var (
	// ErrConfig: the configuration is incomplete or out of range.
	ErrConfig = errors.New("devicefw: bad configuration")
	// ErrUnknownMeter: a reading names a meter index the device did not declare.
	ErrUnknownMeter = errors.New("devicefw: unknown meter index")
	// ErrPendingFull: every pending slot holds a ticket that no newer ticket
	// covers; wait for receipts (or re-send) before reporting again.
	ErrPendingFull = errors.New("devicefw: pending tickets full")
	// ErrSlotTooSmall: the ticket does not fit the pending slot size.
	ErrSlotTooSmall = errors.New("devicefw: ticket larger than a pending slot")
	// ErrSeqExhausted: the sequence counter reached protocol.MaxSeq.
	ErrSeqExhausted = errors.New("devicefw: sequence numbers exhausted")
	// ErrSeqStore: the reservation could not be persisted; no seq was issued.
	ErrSeqStore = errors.New("devicefw: persisting the sequence reservation failed")
	// ErrWrongDevice: a receipt for another device.
	ErrWrongDevice = errors.New("devicefw: receipt is for another device")
	// ErrNotPending: a valid receipt for a ticket no longer pending (already
	// answered, or superseded by a newer ticket). The receipt is still
	// returned, and nothing changed.
	ErrNotPending = errors.New("devicefw: receipt for a ticket that is not pending")
	// ErrChainIndex: a payword index at or below the last one given out,
	// or past the chain's end; commit the next chain.
	ErrChainIndex = errors.New("devicefw: payword index out of the chain's order")
	// ErrChainState: a saved chain state of another chain, or damaged.
	ErrChainState = errors.New("devicefw: saved chain state does not fit the chain")
	// ErrNoGrant: a release without a grant to release.
	ErrNoGrant = errors.New("devicefw: no grant")
)
