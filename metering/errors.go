package metering

import "errors"

// Sentinel errors. Functions wrap them with %w and a detail that names the
// value at fault; check with errors.Is.
var (
	// ErrOverflow: an amount or quantity does not fit its integer type.
	// Farthing never wraps.
	ErrOverflow = errors.New("metering: overflow")
	// ErrCurrencyMismatch: amounts of two currencies were combined, or a
	// tariff's currency differs from the account it charges.
	ErrCurrencyMismatch = errors.New("metering: currency mismatch")
	// ErrBadMoney: a decimal amount or currency that does not parse.
	ErrBadMoney = errors.New("metering: bad amount")
	// ErrBadTariff: a tariff that is inconsistent (overlapping tiers or
	// time-of-use windows, negative price, unknown time zone …).
	ErrBadTariff = errors.New("metering: bad tariff")
	// ErrInsufficientFunds: a prepaid charge would take the balance below
	// zero, or a postpaid one past the credit limit.
	ErrInsufficientFunds = errors.New("metering: insufficient funds")
	// ErrCapReached: a charge would take spending past a cap for the day
	// or the month.
	ErrCapReached = errors.New("metering: spending cap reached")
	// ErrRegisterBackwards: a register lower than the last one in the same
	// epoch.
	ErrRegisterBackwards = errors.New("metering: register went backwards")
	// ErrEpochBackwards: a register epoch older than the current one.
	ErrEpochBackwards = errors.New("metering: register epoch went backwards")
	// ErrBadState: a stored state that does not decode.
	ErrBadState = errors.New("metering: bad state encoding")
	// ErrBadProof: a Merkle inclusion proof that does not check.
	ErrBadProof = errors.New("metering: bad inclusion proof")
)
