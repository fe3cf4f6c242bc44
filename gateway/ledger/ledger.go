// Package ledger owns the gateway's books: every bucket, key layout and
// record of the state file, and the typed operations on them — accept a
// ticket's effects, seal due windows, the outbox (next, confirm), pruning,
// inclusion proofs, the stream epoch and the inspect view. Nothing outside
// this package names a bucket; gateway/store below it keeps only bytes and
// the group commit.
//
// Invariants:
//
//   - Every operation that writes runs inside one store operation (a
//     group-committed bbolt transaction) and reads everything it needs
//     before it writes: an operation that returns an error has written
//     nothing. Accepting a ticket is: load the state it touches, decide
//     with package metering (no I/O), then write.
//   - Aggregate seqs are gapless from 1 within the state file's stream
//     epoch; a sealed aggregate's bytes are signed once, when it seals, and
//     sent unchanged until every upstream confirmed them.
//   - Money is in nanos, exact: the receipts' charges, the ledger entries
//     and the windows (open and sealed) add up to the same sum (Inspect's
//     reconciliation).
//
// The state file carries a schema version (meta "schema-version"), checked
// when the gateway opens it: an older file is migrated, a newer one is
// refused.
package ledger

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Terms are the configuration the books are kept by: the gateway id
// aggregates carry, the tariffs and settlement policies, and the accounts'
// opening states. The gateway swaps them on a reload; an operation uses
// the Terms it was handed from start to end.
type Terms struct {
	GatewayID string
	Tariffs   *metering.TariffSet
	Policies  map[string]metering.Policy
	Accounts  map[string]metering.Account // opening states
	// Caps are the accounts' spending caps, with the time zone their days
	// and months are counted in; an account without an entry has none.
	Caps map[string]metering.Caps
	// LowBalance is each account's low-balance level: a receipt whose
	// account can spend less than it carries the low-balance flag.
	LowBalance map[string]metering.Nanos
	// LateFold is how long late usage of a sealed window gathers before it
	// seals as one correction (see fold.go); 0 seals at the next
	// housekeeping tick.
	LateFold time.Duration
	// Grants are the rules grants are made by (grants.go).
	Grants metering.GrantTerms
}

// Payer is who a ticket is charged to: the device, its account and
// provider, and the tariff of each of its meters.
type Payer struct {
	Device, Account, Provider string
	Tariffs                   map[string]string // meter → tariff id
	// DailyCap bounds what the device may spend per day (in the account's
	// currency and time zone); 0 is none.
	DailyCap metering.Nanos
	// Rules are the device's own plausibility rules, by meter; a meter
	// without an entry has its tariff's.
	Rules map[string]*metering.Rules
	// Key is the key id the ticket was signed with. A device rotating its
	// key (Rotating) has a NextKey: once a ticket under it is accepted, or
	// from RetireAt (Unix ms), tickets under the old key are refused.
	Key, NextKey [protocol.KeyIDLen]byte
	RetireAt     int64
	Rotating     bool
}

// Refusal is an outcome other than a commit: a rejected ticket (with its
// reason), insufficient funds, or retry later. Nothing is written.
type Refusal struct {
	Status protocol.Status
	Reason protocol.Reason
	Detail string
	// Available is what the account had available when the transaction
	// that refused it read it (HasAvailable): an insufficient-funds
	// receipt carries it, so nothing is read after the commit.
	Available    int64
	HasAvailable bool
}

func (r *Refusal) Error() string {
	return r.Status.String() + ": " + r.Reason.String() + ": " + r.Detail
}

// Reject returns a Refusal with StatusRejected.
func Reject(reason protocol.Reason, format string, args ...any) *Refusal {
	return &Refusal{Status: protocol.StatusRejected, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Config is what Books needs besides the store.
type Config struct {
	// Signer signs aggregates when they seal (the gateway's Ed25519 key);
	// nil seals without an outbox entry (tests of pricing only).
	Signer protocol.Signer
	// Stream names the aggregate stream: the signer's key id and the state
	// file's epoch (see StreamEpoch).
	Stream protocol.StreamID
	// SeqBase is subtracted from an aggregate's seq in the file to give its
	// seq in Stream (non-zero after a restore; see OpenStream).
	SeqBase uint64
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnSeal, if set, is told the reason of every aggregate sealed
	// ("time", "threshold", "correction", …), for metrics.
	OnSeal func(reason string)
	// OnGrant, if set, is told every change to a grant ("granted",
	// "released", "expired", "idle") with the amount reserved or given
	// back, for metrics.
	OnGrant func(event string, amount metering.Nanos)
}

// Books is the gateway's state file seen through typed operations. It is
// safe for concurrent use: writes go through the store's single committer.
type Books struct {
	st  *store.Store
	cfg Config
	// tariffs caches the tariff versions the state file holds, parsed
	// (tariffs.go); reloaded when the file's tariff index moves.
	tariffs atomic.Pointer[tariffIndex]
}

// New returns the books kept in st. Call Init first on a writable store.
func New(st *store.Store, cfg Config) *Books {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnSeal == nil {
		cfg.OnSeal = func(string) {}
	}
	if cfg.OnGrant == nil {
		cfg.OnGrant = func(string, metering.Nanos) {}
	}
	return &Books{st: st, cfg: cfg}
}

// Stream is the aggregate stream the books seal into.
func (b *Books) Stream() protocol.StreamID { return b.cfg.Stream }

// wire is the seq in its stream of the record at seq in the file: records
// sealed since the last restore count from 1 in the new epoch; those
// before it keep their seq in the epoch they were signed in.
func (b *Books) wire(seq uint64) uint64 {
	if seq > b.cfg.SeqBase {
		return seq - b.cfg.SeqBase
	}
	return seq
}

// Store is the store the books are kept in.
func (b *Books) Store() *store.Store { return b.st }

func (b *Books) now() time.Time { return b.cfg.Now() }
