package gateway

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/upstream"
)

// Upstream is where aggregates go: a provider's MQTT broker, an HTTP
// endpoint or a JetStream stream (packages under gateway/upstream).
type Upstream interface {
	// Send delivers one signed aggregate and returns nil only once the
	// upstream confirmed it (PUBACK, HTTP 2xx, JetStream ack). Sending the
	// same aggregate again must be harmless: Key is the idempotency key
	// "<gateway>/<seq>" and receivers deduplicate on it.
	Send(ctx context.Context, a upstream.Outgoing) error
	// Close releases the connection.
	Close() error
}

// ForwardConfig is one upstream's forwarder.
type ForwardConfig struct {
	// Name keys the upstream's progress in the state file; keep it stable.
	Name string
	// Providers limits the upstream to these providers' aggregates; empty
	// means all.
	Providers []string
	ForwardSettings
}

// ForwardSettings tune every forwarder (the forward section of
// farthingd.yaml). Zero fields take the defaults shown.
type ForwardSettings struct {
	// DrainRate bounds aggregates per second, so a long outage drains
	// without flooding the provider; default 200.
	DrainRate float64 `yaml:"drain_rate"`
	// MinConnected is how long sending must succeed before the backoff
	// resets to BackoffMin; default 30s. A flapping link keeps backing off.
	MinConnected time.Duration `yaml:"min_connected"`
	// BackoffMin and BackoffMax bound the retry delay, which doubles per
	// failure and is drawn uniformly from [0, delay] (full jitter);
	// defaults 200ms and 1m.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
	// MaxAge: an aggregate older than this still waiting is reported (log
	// and metric), never deleted; default 24h.
	MaxAge time.Duration `yaml:"max_age"`
}

// SetDefaults fills in the zero fields.
func (c *ForwardSettings) SetDefaults() {
	if c.BackoffMin <= 0 {
		c.BackoffMin = 200 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Minute
	}
	if c.MinConnected <= 0 {
		c.MinConnected = 30 * time.Second
	}
	if c.DrainRate <= 0 {
		c.DrainRate = 200
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
}

// forwarder sends the outbox to every configured upstream. An aggregate
// leaves the outbox only when every upstream confirmed it.
type forwarder struct {
	books   *ledger.Books
	gateway string // the gateway id the aggregates are sent as
	log     *slog.Logger
	event   func(event string) // counts "send_failed", "confirmed"
	names   []string           // every configured upstream, for pruning
	// sending is, by upstream name, the seq of the aggregate being sent
	// and not yet confirmed (an *atomic.Uint64; 0: none).
	sending sync.Map
}

// Sending returns the seq of the aggregate being sent to upstream name and
// not confirmed yet (retries included), or 0.
func (f *forwarder) Sending(name string) uint64 {
	if v, ok := f.sending.Load(name); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

// newForwarder returns a forwarder of books' outbox, as gateway, for
// upstreams with these names; event counts its sends' outcomes.
func newForwarder(books *ledger.Books, gateway string, names []string, log *slog.Logger, event func(string)) *forwarder {
	return &forwarder{books: books, gateway: gateway, log: log, event: event, names: slices.Clone(names)}
}

// Run forwards to one upstream until ctx ends: in aggregate-seq order,
// each sent until confirmed, retried with backoff and full jitter.
func (f *forwarder) Run(ctx context.Context, up Upstream, cfg ForwardConfig) error {
	cfg.SetDefaults()
	log := f.log.With("upstream", cfg.Name)
	cursor, err := f.books.Confirmed(cfg.Name)
	if err != nil {
		return err
	}
	interval := time.Duration(float64(time.Second) / cfg.DrainRate)
	sending := new(atomic.Uint64)
	f.sending.Store(cfg.Name, sending)
	var (
		attempt        int
		connectedSince time.Time // first success after the last failure
		lastSend       time.Time
		reportedOld    uint64
	)
	for ctx.Err() == nil {
		next, ok, err := f.next(cursor)
		if err != nil {
			return err
		}
		if !ok {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		if len(cfg.Providers) > 0 && !slices.Contains(cfg.Providers, next.Provider) {
			cursor = next.Seq // not this upstream's: nothing to confirm
			if err := f.confirm(ctx, cfg.Name, cursor); err != nil && ctx.Err() == nil {
				log.Warn("recording progress failed", "error", err)
			}
			continue
		}
		if age := time.Since(next.end); age > cfg.MaxAge && reportedOld != next.Seq {
			reportedOld = next.Seq
			log.Warn("aggregate waiting longer than max_age; it is kept", "seq", next.Seq, "age", age.Round(time.Second))
		}
		if wait := interval - time.Since(lastSend); wait > 0 {
			sleep(ctx, wait)
		}
		lastSend = time.Now()
		sending.Store(next.Seq)
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = up.Send(sctx, next.Outgoing)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			f.event("send_failed")
			delay := min(cfg.BackoffMax, cfg.BackoffMin<<min(attempt, 30))
			d := time.Duration(rand.Int64N(int64(delay) + 1))
			log.Warn("upstream send failed; retrying", "seq", next.Seq, "attempt", attempt+1, "retry_in", d.Round(time.Millisecond), "error", err)
			attempt++
			connectedSince = time.Time{}
			sleep(ctx, d)
			continue
		}
		if connectedSince.IsZero() {
			connectedSince = time.Now()
		} else if attempt > 0 && time.Since(connectedSince) >= cfg.MinConnected {
			attempt = 0
		}
		f.event("confirmed")
		sending.Store(0)
		cursor = next.Seq
		if err := f.confirm(ctx, cfg.Name, cursor); err != nil && ctx.Err() == nil {
			log.Warn("recording a confirmation failed; the aggregate will be sent again", "seq", cursor, "error", err)
		}
	}
	return nil
}

type pending struct {
	upstream.Outgoing
	end time.Time
}

// next returns the first outbox aggregate after cursor.
func (f *forwarder) next(cursor uint64) (pending, bool, error) {
	o, ok, err := f.books.Next(cursor)
	if !ok || err != nil {
		return pending{}, ok, err
	}
	return pending{Outgoing: upstream.Outgoing{Seq: o.Seq, Gateway: f.gateway, Provider: o.Provider, Key: o.Key,
		Bytes: o.Bytes}, end: o.End}, true, nil
}

// confirm records an upstream's progress and drops from the outbox every
// aggregate all upstreams confirmed.
func (f *forwarder) confirm(ctx context.Context, name string, seq uint64) error {
	return f.books.Confirm(ctx, name, seq, f.names)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
