package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// Submission is a ticket as a transport received it.
type Submission struct {
	// Device is the identity the transport authenticated: the device id in
	// the MQTT topic (and user name), or the DTLS identity. The ticket's
	// device id and key must match it.
	Device string
	// Payload is the ticket's bytes, untrusted.
	Payload []byte
	// Transport names the transport, for metrics and logs.
	Transport string
}

// Result is the gateway's answer to one submission.
type Result struct {
	Receipt protocol.Receipt
	// Bytes is the receipt MAC'd with the submitting device's receipt key;
	// nil when the submitter is not a registered device (nobody to answer).
	Bytes []byte
}

// Ingest is the pipeline every transport feeds: decode, verify, dedup,
// price, commit, receipt. It is safe for concurrent use: decoding and
// verification run on the transports' goroutines (so on every core), and
// all state changes go through the store's single committer.
type Ingest struct {
	books   *ledger.Books
	seen    presence // when each device's last verified ticket came
	snap    atomic.Pointer[Snapshot]
	metrics *Metrics
	log     *slog.Logger
	limits  LimitsConfig
	now     func() time.Time
	full    atomic.Bool // the store is near its bound
	// fullRefused counts tickets answered retry later for a full store;
	// they are logged in summary (see Gateway.watchDisk), not one by one.
	fullRefused atomic.Uint64
	received    atomic.Uint64 // tickets handed to Start, for housekeeping's idle test
	ed          *edBatcher
	fraud       fraudWatch
	onSuspend   func(device string) // closes a suspended device's sessions
}

// Snapshot is the configuration the pipeline prices with; Reload swaps it
// atomically, so a ticket in flight finishes with the snapshot it started
// with.
type Snapshot struct {
	Registry *Registry
	ledger.Terms
}

// Account, Provider and Tariff make a Snapshot the Known of BuildRegistry.
func (s *Snapshot) Account(id string) bool  { _, ok := s.Accounts[id]; return ok }
func (s *Snapshot) Provider(id string) bool { _, ok := s.Policies[id]; return ok }
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

// NewIngest returns a pipeline that keeps its books in books, with the
// first snapshot.
func NewIngest(books *ledger.Books, snap *Snapshot, limits LimitsConfig, m *Metrics, log *slog.Logger) *Ingest {
	if m == nil {
		m = NewMetrics()
	}
	in := &Ingest{books: books, metrics: m, log: log, limits: limits, now: time.Now,
		ed: newEdBatcher(func(n int) { m.VerifyBatch.Observe(float64(n)) })}
	in.snap.Store(snap)
	return in
}

// Reload installs a new snapshot (a registry or tariff change).
func (in *Ingest) Reload(s *Snapshot) { in.snap.Store(s) }

// Snapshot returns the current snapshot.
func (in *Ingest) Snapshot() *Snapshot { return in.snap.Load() }

// refusal is a pipeline outcome other than a commit (ledger.Refusal).
type refusal = ledger.Refusal

var reject = ledger.Reject

// Submit runs one ticket through the pipeline and returns the receipt to
// send. It returns only after an accepted ticket's effects are durable.
func (in *Ingest) Submit(ctx context.Context, sub Submission) Result {
	return in.Start(ctx, sub).Wait()
}

// Pending is a ticket on its way through the pipeline: checked, and queued
// for its commit. Wait returns its result.
type Pending struct {
	in    *Ingest
	ctx   context.Context
	sub   Submission
	start time.Time
	snap  *Snapshot
	dev   *Device
	tk    protocol.Ticket
	ref   *refusal
	done  <-chan error     // the commit's result; nil when refused before
	rc    protocol.Receipt // set by the commit
	fresh bool             // the commit wrote the ticket (it was not seen before)
	// paywordSeq is a payword ticket's seq, set by the commit (it needs
	// the chain's number); read after done.
	paywordSeq uint64
}

// Start decodes and verifies a ticket on the caller's goroutine and queues
// it for commit, then returns without waiting for the commit. Tickets are
// committed in the order Start queued them, so a transport that calls
// Start for a device's tickets in arrival order keeps them in that order
// while many are in flight.
func (in *Ingest) Start(ctx context.Context, sub Submission) *Pending {
	in.received.Add(1)
	p := &Pending{in: in, ctx: ctx, sub: sub, start: in.now(), snap: in.snap.Load()}
	if protocol.IsPaywordTicket(sub.Payload) {
		return in.startPayword(p)
	}
	var (
		dev        *Device
		tk         protocol.Ticket
		raw        []byte
		ref        *refusal
		commitment *protocol.Commitment
	)
	dev, tk, raw, ref = in.check(p.snap, sub)
	if ref != nil && isCommitment(sub.Payload) {
		// Not a ticket but a payword chain's commitment, which comes the
		// way tickets do (looked at only once the ticket decoder refused
		// it, so tickets pay nothing for it).
		commitment = new(protocol.Commitment)
		dev, tk, raw, ref = in.checkCommitment(p.snap, sub, commitment)
	}
	p.dev, p.tk, p.ref = dev, tk, ref
	if p.ref != nil {
		return p
	}
	in.seen.saw(dev.ID, sub.Transport, p.start)
	committed, err := in.books.Store().Enqueue(ctx, func(tx *bolt.Tx) error {
		var err error
		if commitment != nil {
			p.rc, p.fresh, err = in.books.ApplyCommitment(tx, &p.snap.Terms, payerOf(dev, p.snap.Registry), commitment, raw)
			return err
		}
		p.rc, p.fresh, err = in.books.Apply(tx, &p.snap.Terms, payerOf(dev, p.snap.Registry), &p.tk, raw)
		return err
	})
	if err != nil {
		p.ref = commitRefusal(in, sub, p.tk.Seq, err)
		return p
	}
	p.done = committed
	return p
}

func isCommitment(b []byte) bool {
	k, ok := protocol.KindOf(b)
	return ok && k == protocol.KindCommitment
}

// startPayword checks a payword ticket's device and queues its check
// against its chain, which needs the chain's state, with its commit.
func (in *Ingest) startPayword(p *Pending) *Pending {
	var pw protocol.PaywordTicket
	if err := protocol.ParsePaywordTicket(p.sub.Payload, &pw); err != nil {
		p.ref = reject(protocol.ReasonOf(err), "%v", err)
		return p
	}
	p.tk = protocol.Ticket{Device: pw.Device, Seq: uint64(pw.Index)}
	dev := p.snap.Registry.Device(pw.Device)
	if dev == nil {
		p.ref = reject(protocol.ReasonUnknownKey, "no device %q is registered", pw.Device)
		return p
	}
	if p.ref = in.refuseDevice(dev); p.ref != nil {
		return p
	}
	if p.sub.Device != dev.ID {
		p.ref = reject(protocol.ReasonDeviceMismatch, "payword of device %q arrived as %q", dev.ID, p.sub.Device)
		return p
	}
	if in.full.Load() {
		p.ref = &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStorageFull, Detail: "state file near its bound"}
		return p
	}
	p.dev = dev
	in.seen.saw(dev.ID, p.sub.Transport, p.start)
	raw := p.sub.Payload
	var tk protocol.Ticket // the reading the payword stands for, filled in by the commit
	committed, err := in.books.Store().Enqueue(p.ctx, func(tx *bolt.Tx) error {
		var err error
		p.rc, p.fresh, err = in.books.ApplyPayword(tx, &p.snap.Terms, payerOf(dev, p.snap.Registry), &pw, raw, &tk)
		p.paywordSeq = tk.Seq
		return err
	})
	if err != nil {
		p.ref = commitRefusal(in, p.sub, p.tk.Seq, err)
		return p
	}
	p.done = committed
	return p
}

// deviceOfKey finds the device a message's key id belongs to, or refuses:
// a revoked key, a key no device has, a device that may not send.
func (in *Ingest) deviceOfKey(snap *Snapshot, kid []byte) (*Device, *refusal) {
	dev := snap.Registry.ByKeyID(kid)
	switch {
	case snap.Registry.KeyRevoked(kid):
		return nil, reject(protocol.ReasonKeyRevoked, "key id %x was revoked", kid)
	case dev == nil:
		return nil, reject(protocol.ReasonUnknownKey, "no device has key id %x", kid)
	}
	if ref := in.refuseDevice(dev); ref != nil {
		return nil, ref
	}
	return dev, nil
}

// refuseDevice refuses a device that may not send: revoked, suspended or
// disabled.
func (in *Ingest) refuseDevice(dev *Device) *refusal {
	switch {
	case dev.Revoked:
		return reject(protocol.ReasonKeyRevoked, "device %s is revoked", dev.ID)
	case in.suspended(dev.ID):
		return reject(protocol.ReasonDeviceSuspended, "device %s is suspended until an operator resumes it", dev.ID)
	case dev.Disabled:
		return reject(protocol.ReasonDeviceDisabled, "device %s is disabled", dev.ID)
	}
	return nil
}

// checkCommitment decodes and authenticates a payword chain commitment as
// check does a ticket, and returns the reading it stands for (its index
// 0) as the ticket.
func (in *Ingest) checkCommitment(snap *Snapshot, sub Submission, c *protocol.Commitment) (*Device, protocol.Ticket, []byte, *refusal) {
	var env protocol.Envelope
	if err := protocol.ParseCommitment(sub.Payload, &env, c); err != nil {
		return nil, protocol.Ticket{}, nil, reject(protocol.ReasonOf(err), "%v", err)
	}
	tk := ledger.CommitmentTicket(c, in.now().UnixMilli())
	dev, ref := in.authenticate(snap, sub, &env, c.Device, "commitment")
	if ref != nil {
		return nil, tk, nil, ref
	}
	if _, ok := dev.Tariffs[c.Meter]; !ok {
		return nil, tk, nil, reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", dev.ID, c.Meter)
	}
	if in.full.Load() {
		return nil, tk, nil, &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStorageFull, Detail: "state file near its bound"}
	}
	return dev, tk, sub.Payload, nil
}

// commitRefusal turns a failed commit into the answer to the device.
func commitRefusal(in *Ingest, sub Submission, seq uint64, err error) *refusal {
	var rf *ledger.Refusal
	switch {
	case errors.As(err, &rf):
		return rf
	case errors.Is(err, store.ErrClosed):
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonShuttingDown, Detail: "gateway is stopping"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonOverloaded, Detail: "queue full"}
	default:
		in.log.Error("commit failed", "device", sub.Device, "seq", seq, "error", err)
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStoreError, Detail: err.Error()}
	}
}

// Wait returns the ticket's result once its effects are durable, or its
// refusal.
func (p *Pending) Wait() Result {
	in, snap, sub, ref := p.in, p.snap, p.sub, p.ref
	answer := snap.Registry.Device(sub.Device) // who gets the receipt
	if p.dev != nil && p.dev.ID == sub.Device {
		answer = p.dev // with the keys of the ticket's key (a rotating device's next)
	}
	r := protocol.Receipt{Device: sub.Device}
	if answer != nil {
		r.Currency = string(snap.Accounts[answer.Account].Currency)
	}
	if p.done != nil {
		err := <-p.done
		if p.paywordSeq != 0 {
			p.tk.Seq = p.paywordSeq // known once the chain was read
		}
		if err != nil {
			ref = commitRefusal(in, sub, p.tk.Seq, err)
		} else {
			r = p.rc
		}
		if in.metrics != nil {
			in.metrics.Commit.Observe(in.now().Sub(p.start).Seconds())
		}
	}
	if ref != nil {
		r.Seq = p.tk.Seq // 0 when the ticket could not be read
		r.Status, r.Reason, r.Charged, r.HasBalance = ref.Status, ref.Reason, 0, false
		if ref.Status == protocol.StatusInsufficientFunds {
			r.Balance, r.HasBalance = in.available(snap, p.dev), true
		}
		if ref.Status == protocol.StatusRetryLater {
			r.RetryAfter = uint32(in.limits.RetryAfter.Milliseconds())
		}
		lvl := slog.LevelInfo
		switch {
		case ref.Reason == protocol.ReasonStorageFull:
			in.fullRefused.Add(1)
			lvl = slog.LevelDebug // summarised once a minute while full
		case ref.Status == protocol.StatusRetryLater:
			lvl = slog.LevelWarn
		}
		in.log.Log(p.ctx, lvl, "ticket refused", "transport", sub.Transport, "device", sub.Device, "seq", p.tk.Seq,
			"status", ref.Status.String(), "reason", ref.Reason.String(), "detail", ref.Detail)
	}
	if p.done != nil && ref == nil {
		switch {
		case r.Status == protocol.StatusHeld && p.fresh:
			in.log.Warn("ticket held: it broke a plausibility rule of its meter; its usage waits for an operator (farthing quarantine)",
				"transport", sub.Transport, "device", sub.Device, "seq", p.tk.Seq, "rule", r.Reason.String())
			in.noteHeld(sub.Device)
		case r.Status == protocol.StatusDuplicate && r.Reason == protocol.ReasonSuperseded:
			in.NoteCloneSign(sub.Device, SignSuperseded, "seq "+strconv.FormatUint(p.tk.Seq, 10))
		}
	}
	if in.metrics != nil {
		reason := ""
		if r.Reason != protocol.ReasonNone {
			reason = r.Reason.String()
		}
		in.metrics.Tickets.WithLabelValues(r.Status.String(), reason).Inc()
		if r.LowBalance && p.dev != nil {
			in.metrics.LowBalance.WithLabelValues(p.dev.Account).Inc()
		}
		in.metrics.Latency.WithLabelValues(sub.Transport).Observe(in.now().Sub(p.start).Seconds())
	}
	res := Result{Receipt: r}
	if answer != nil {
		if mac, err := protocol.NewHMAC(answer.ReceiptKey()); err == nil {
			var e protocol.Encoder
			b, err := e.AppendReceipt(make([]byte, 0, 128), &r, mac)
			if err != nil {
				in.log.Error("receipt encoding failed", "device", sub.Device, "error", err)
			} else {
				res.Bytes = b
			}
		}
	}
	return res
}

// authenticate finds the device whose key made env, checks that the
// message (a "ticket" or a "commitment", naming device named) is that
// device's and came over its connection, and verifies it with the key.
func (in *Ingest) authenticate(snap *Snapshot, sub Submission, env *protocol.Envelope, named, what string) (*Device, *refusal) {
	dev, ref := in.deviceOfKey(snap, env.KeyID)
	switch {
	case ref != nil:
		return nil, ref
	case named != dev.ID:
		return nil, reject(protocol.ReasonDeviceMismatch, "%s names device %q, its key is %q's", what, named, dev.ID)
	case sub.Device != dev.ID:
		return nil, reject(protocol.ReasonDeviceMismatch, "%s of device %q arrived as %q", what, dev.ID, sub.Device)
	}
	dev = dev.ForKey(env.KeyID) // a rotating device's next key, when the message uses it
	if err := in.verify(dev, env); err != nil {
		return nil, reject(protocol.ReasonOf(err), "%v", err)
	}
	return dev, nil
}

// check decodes and authenticates the ticket: everything that needs no
// state. It returns the device, the ticket and the raw bytes, or a refusal.
func (in *Ingest) check(snap *Snapshot, sub Submission) (*Device, protocol.Ticket, []byte, *refusal) {
	t0 := in.now()
	env, tk, err := strict.DecodeTicket(sub.Payload)
	if err != nil {
		return nil, tk, nil, reject(protocol.ReasonOf(err), "%v", err)
	}
	dev, ref := in.authenticate(snap, sub, &env, tk.Device, "ticket")
	if ref != nil {
		return nil, tk, nil, ref
	}
	if in.metrics != nil {
		in.metrics.Verify.Observe(in.now().Sub(t0).Seconds())
	}
	now := in.now().UnixMilli()
	if skew := in.limits.MaxClockSkew.Milliseconds(); int64(tk.Time) > now+skew || int64(tk.Time) < now-skew {
		return nil, tk, nil, reject(protocol.ReasonClockSkew, "device time %d is more than %v from %d", tk.Time, in.limits.MaxClockSkew, now)
	}
	if tk.Account != "" && tk.Account != dev.Account {
		return nil, tk, nil, reject(protocol.ReasonUnknownAccount, "device %s may not charge account %q", dev.ID, tk.Account)
	}
	for _, rd := range tk.Readings {
		if _, ok := dev.Tariffs[rd.Meter]; !ok {
			return nil, tk, nil, reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", dev.ID, rd.Meter)
		}
	}
	if in.full.Load() {
		return nil, tk, nil, &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStorageFull, Detail: "state file near its bound"}
	}
	return dev, tk, sub.Payload, nil
}

func (in *Ingest) available(snap *Snapshot, dev *Device) int64 {
	if dev == nil {
		return 0
	}
	return in.books.Available(&snap.Terms, dev.Account)
}

// payerOf is who a device's tickets are charged to, as seen through the
// key the ticket used (d is the device ForKey returned).
func payerOf(d *Device, reg *Registry) ledger.Payer {
	p := ledger.Payer{Device: d.ID, Account: d.Account, Provider: d.Provider, Tariffs: d.Tariffs, DailyCap: d.DailyCapNanos,
		Rules: d.Plausibility, Key: [protocol.KeyIDLen]byte(d.KeyID())}
	if r := reg.Device(d.ID); r != nil {
		p.NextKey, p.RetireAt, p.Rotating = r.Rotation()
	}
	return p
}

// tbsPool holds buffers for the bytes a ticket's signature covers.
var tbsPool = sync.Pool{New: func() any { b := make([]byte, 0, protocol.MaxTicketSize+64); return &b }}

// verify checks the ticket's MAC or signature with the device's key.
// Ed25519 signatures go through the batcher (ZIP-215, the gateway's one
// rule); HMAC state is made per ticket, as it is not safe to share.
func (in *Ingest) verify(dev *Device, env *protocol.Envelope) error {
	if (env.Alg == protocol.AlgEdDSA) != (dev.Ed25519Key() != nil) {
		return &protocol.Error{Reason: protocol.ReasonUnsupportedAlg, Detail: "ticket uses " + env.Alg.String() + ", the device's key is " + dev.KeyType}
	}
	bp := tbsPool.Get().(*[]byte)
	defer tbsPool.Put(bp)
	tbs := protocol.AppendToBeSigned((*bp)[:0], env.Alg, env.Protected, env.Payload)
	*bp = tbs[:0]
	if env.Alg == protocol.AlgEdDSA {
		if !in.ed.Verify(dev.Ed25519Key(), tbs, env.Signature) {
			return protocol.ErrBadSignature
		}
		return nil
	}
	v, err := dev.NewVerifier()
	if err != nil {
		return err
	}
	if v.Verify(tbs, env.Signature) != nil {
		return protocol.ErrBadSignature
	}
	return nil
}

// SetFull marks the store near (or back under) its bound.
func (in *Ingest) SetFull(full bool) { in.full.Store(full) }

// CloseWindows seals every open window whose end is at or before now.
func (in *Ingest) CloseWindows(ctx context.Context, now time.Time) error {
	return in.books.CloseWindows(ctx, &in.snap.Load().Terms, now)
}

// PruneTickets prunes what every upstream confirmed (ledger.Books.PruneTickets).
func (in *Ingest) PruneTickets(ctx context.Context, upstreams []string, retention time.Duration, now time.Time) (int, error) {
	return in.books.PruneTickets(ctx, upstreams, retention, now)
}

// Received is how many tickets the pipeline was handed so far.
func (in *Ingest) Received() uint64 { return in.received.Load() }

// Books returns the books the pipeline keeps.
func (in *Ingest) Books() *ledger.Books { return in.books }
