// Package ingest is the gateway's one entrance for device messages: every
// transport hands each message (a ticket, a payword, a chain commitment,
// a voucher) to Ingest.Handle, which classifies it once by its kind,
// checks it — decode, authenticate, verify — on the caller's goroutine,
// and queues its effects for the store's single committer. The receipt is
// made from the facts the commit returns; nothing is read after it.
//
// Invariant: a receipt that says "accepted" (or "held", or a voucher
// "redeemed") is never returned before the message's effects are on disk.
package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// Config is what the pipeline needs. Books, Snapshot and Log are
// required; zero durations take the defaults shown.
type Config struct {
	Books    *ledger.Books
	Snapshot *Snapshot // the first snapshot (Reload installs the next)
	// MaxClockSkew bounds how far a ticket's device time may be from the
	// gateway's clock; default 48h.
	MaxClockSkew time.Duration
	// RetryAfter is what a "retry later" receipt tells a device to wait;
	// default 5s.
	RetryAfter time.Duration
	// Fraud sets the automatic suspension of devices.
	Fraud FraudConfig
	// Issuers verify vouchers, by key id; none: every voucher is forged.
	Issuers map[string]*strict.Ed25519Verifier
	// Metrics, if nil, are made unregistered.
	Metrics *Metrics
	Log     *slog.Logger
	// OnSuspend, if set, is called after a device was suspended, to close
	// its sessions.
	OnSuspend func(device string)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Ingest is the pipeline. It is safe for concurrent use: decoding and
// verification run on the transports' goroutines (so on every core), and
// every state change goes through the store's single committer.
type Ingest struct {
	books   *ledger.Books
	seen    presence  // when each device's last verified message came
	skew    skewWatch // the directions of recent clock_skew refusals
	snap    atomic.Pointer[Snapshot]
	metrics *Metrics
	log     *slog.Logger
	cfg     Config
	now     func() time.Time
	full    atomic.Bool // the store is near its bound
	// fullRefused counts messages answered retry later for a full store;
	// they are logged in summary by whoever watches the disk, not one by one.
	fullRefused atomic.Uint64
	received    atomic.Uint64 // messages handed to Start, for housekeeping's idle test
	ed          *edBatcher
	fraud       fraudWatch
	paywords    paywordMarks
}

// Snapshot is the configuration the pipeline prices with; Reload swaps it
// atomically, so a message in flight finishes with the snapshot it
// started with.
type Snapshot struct {
	Registry *registry.Registry
	ledger.Terms
}

// Account reports whether the account is configured (registry.Known).
func (s *Snapshot) Account(id string) bool { _, ok := s.Accounts[id]; return ok }

// Provider reports whether the provider is configured (registry.Known).
func (s *Snapshot) Provider(id string) bool { _, ok := s.Policies[id]; return ok }

// Tariff checks that the tariff exists and is in the account's currency
// (registry.Known).
func (s *Snapshot) Tariff(id, account string) error {
	t := s.Tariffs.Get(id)
	if t == nil {
		return fmt.Errorf("tariff %q is not in the tariff file", id)
	}
	if a := s.Accounts[account]; a.Currency != t.Currency {
		return fmt.Errorf("%w: tariff %q is in %s, account %q in %s", metering.ErrCurrencyMismatch, id, t.Currency, account, a.Currency)
	}
	return nil
}

// New returns the pipeline, with the devices the books hold suspended.
func New(cfg Config) (*Ingest, error) {
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = 48 * time.Hour
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if err := cfg.Fraud.Normalize(); err != nil {
		return nil, err
	}
	m := cfg.Metrics
	in := &Ingest{books: cfg.Books, metrics: m, log: cfg.Log, cfg: cfg, now: cfg.Now,
		ed: newEdBatcher(func(n int) { m.VerifyBatch.Observe(float64(n)) })}
	in.snap.Store(cfg.Snapshot)
	if err := in.loadSuspended(); err != nil {
		return nil, fmt.Errorf("suspended devices: %w", err)
	}
	return in, nil
}

// Handle is the transports' entrance.Handler: Start, and a Reply that
// waits for the result.
func (in *Ingest) Handle(ctx context.Context, m entrance.Message) entrance.Reply {
	p := in.Start(ctx, m)
	return func() entrance.Answer {
		res := p.Wait()
		return entrance.Answer{Receipt: res.Bytes, Status: res.Receipt.Status,
			RetryAfter: time.Duration(res.Receipt.RetryAfter) * time.Millisecond}
	}
}

// Submit runs one message through the pipeline and returns its result,
// only after an accepted message's effects are durable.
func (in *Ingest) Submit(ctx context.Context, m entrance.Message) Result {
	return in.Start(ctx, m).Wait()
}

// Reload installs a new snapshot (a registry or tariff change).
func (in *Ingest) Reload(s *Snapshot) { in.snap.Store(s) }

// Snapshot returns the current snapshot.
func (in *Ingest) Snapshot() *Snapshot { return in.snap.Load() }

// Books returns the books the pipeline keeps.
func (in *Ingest) Books() *ledger.Books { return in.books }

// SetFull marks the store near (or back under) its bound: until it is
// unmarked, new messages are answered retry later.
func (in *Ingest) SetFull(full bool) { in.full.Store(full) }

// Full reports whether the store is marked near its bound.
func (in *Ingest) Full() bool { return in.full.Load() }

// FullRefused is how many messages were answered retry later because the
// store was full, since start.
func (in *Ingest) FullRefused() uint64 { return in.fullRefused.Load() }

// Received is how many messages the pipeline was handed so far.
func (in *Ingest) Received() uint64 { return in.received.Load() }

// LastSeen returns when the device's last verified message came and over
// which transport; the zero time if none came since start.
func (in *Ingest) LastSeen(device string) (time.Time, string) { return in.seen.last(device) }
