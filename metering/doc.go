// Package metering is Farthing's money: exact amounts, tariffs, charging a
// reading, accounts, aggregation windows and settlement.
//
// It is pure logic. It does no I/O, reads no clock (times are passed in as
// Unix milliseconds) and starts no goroutines. State goes in and decisions
// come out: every function takes the current state by value and returns the
// new state with what changed, and the caller (the gateway) commits both
// together or neither. Every state type has a versioned binary encoding
// (MarshalBinary/UnmarshalBinary).
//
// # Money
//
// Amounts are int64 nano-units (1e-9) of a currency: Nanos. There are no
// floats anywhere. Overflow is ErrOverflow, never a wrap. Prices are
// rationals (nanos per N units), so 0.10 EUR per GB is exact.
//
// # Exactness
//
// Charging carries, per (account, meter) and per price band (a tier or a
// time-of-use window), the fraction of a nano that a charge could not hold.
// The per-ticket charges of a band therefore always sum to
// floor(total quantity × price) of that band, however the usage was cut
// into tickets. Nothing is rounded when a ticket is charged. Rounding
// happens once, when an amount is settled (Settle), and by default it rounds
// nothing away either: the whole minor units are paid and the rest is
// carried into the next settlement.
//
// # The life of a reading
//
//	usage, meter, outcome, err := meterState.Advance(seq, epoch, register, timeMs)  // cumulative → usage
//	charge, chargeState, err := tariff.Price(chargeState, usage)                      // usage → money
//	entry, account, err := account.Charge(Money{charge.Amount, tariff.Currency}, …)   // money → balance
//	decision, err := policy.Add(windowState, currency, Item{…})                       // → aggregation window
package metering
