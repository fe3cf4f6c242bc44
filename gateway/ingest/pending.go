package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/protocol"
)

// Result is the gateway's answer to one message.
type Result struct {
	Receipt protocol.Receipt
	// Bytes is the receipt MAC'd with the submitting device's receipt key;
	// nil when the submitter is not a registered device (nobody to answer).
	Bytes []byte
}

// Pending is a message on its way through the pipeline: checked, and
// queued for its commit. Wait returns its result.
type Pending struct {
	in    *Ingest
	ctx   context.Context
	msg   entrance.Message
	start time.Time
	snap  *Snapshot
	dev   *registry.Device
	tk    protocol.Ticket // what the message stands for (a payword's seq is set by its commit)
	ref   *refusal
	done  <-chan error     // the commit's result; nil when refused before
	rc    protocol.Receipt // set by the commit: every fact of the receipt
	fresh bool             // the commit wrote the message (it was not seen before)
	// redeem, for a voucher, runs its redemption and returns its receipt.
	redeem func() protocol.Receipt
	kind   protocol.Kind // what the message is (Classify)
}

// isGrant reports whether the message is a grant request or a release.
func (p *Pending) isGrant() bool {
	return p.kind == protocol.KindGrantRequest || p.kind == protocol.KindRelease
}

// Wait returns the message's result once its effects are durable, or its
// refusal. The receipt's facts are those its commit returned.
func (p *Pending) Wait() Result {
	r := p.outcome()
	p.in.account(p, &r)
	return Result{Receipt: r, Bytes: p.in.seal(p, &r)}
}

// outcome waits for the commit and returns the receipt it decided, or the
// refusal's.
func (p *Pending) outcome() protocol.Receipt {
	if p.redeem != nil {
		return p.redeem()
	}
	ref := p.ref
	var r protocol.Receipt
	if p.done != nil {
		err := <-p.done
		p.in.metrics.Commit.Observe(p.in.now().Sub(p.start).Seconds())
		if err == nil {
			return p.rc
		}
		ref = p.in.commitRefusal(p.msg, p.tk.Seq, err)
	}
	r = protocol.Receipt{Device: p.msg.Device, Seq: p.tk.Seq, Status: ref.Status, Reason: ref.Reason}
	if ans := p.answerer(); ans != nil {
		r.Currency = string(p.snap.Accounts[ans.Account].Currency)
	}
	if ref.HasAvailable {
		r.Balance, r.HasBalance = ref.Available, true
	} else if ref.Status == protocol.StatusInsufficientFunds {
		r.HasBalance = true // an account the books could not read: nothing available
	}
	if ref.Status == protocol.StatusRetryLater {
		r.RetryAfter = uint32(p.in.cfg.RetryAfter.Milliseconds())
	}
	p.ref = ref
	return r
}

// answerer is the device that gets the receipt: the submitter, with the
// keys of the message's key (a rotating device's next) when it is theirs.
func (p *Pending) answerer() *registry.Device {
	if p.dev != nil && p.dev.ID == p.msg.Device {
		return p.dev
	}
	return p.snap.Registry.Device(p.msg.Device)
}

// account logs and counts the outcome: a refusal at its level, a held
// ticket, a sign of a clone, and the metrics of every receipt.
func (in *Ingest) account(p *Pending, r *protocol.Receipt) {
	if ref := p.ref; ref != nil {
		lvl := slog.LevelInfo
		switch {
		case ref.Reason == protocol.ReasonStorageFull:
			in.fullRefused.Add(1)
			lvl = slog.LevelDebug // summarised by the disk watch while full
		case ref.Status == protocol.StatusRetryLater:
			lvl = slog.LevelWarn
		}
		what := "ticket refused"
		if p.isGrant() {
			what = p.kind.String() + " refused"
		}
		in.log.Log(p.ctx, lvl, what, "transport", p.msg.Transport, "device", p.msg.Device, "seq", p.tk.Seq,
			"status", ref.Status.String(), "reason", ref.Reason.String(), "detail", ref.Detail)
	} else if p.done != nil {
		switch {
		case r.Status == protocol.StatusHeld && p.fresh && r.Reason == protocol.ReasonGrantExceeded:
			in.log.Warn("ticket held: usage under a grant that neither the grant nor the account's balance covers; it waits for an operator (top up, then farthing quarantine release)",
				"transport", p.msg.Transport, "device", p.msg.Device, "seq", p.tk.Seq)
		case r.Status == protocol.StatusHeld && p.fresh:
			in.log.Warn("ticket held: it broke a plausibility rule of its meter; its usage waits for an operator (farthing quarantine)",
				"transport", p.msg.Transport, "device", p.msg.Device, "seq", p.tk.Seq, "rule", r.Reason.String())
			in.noteHeld(p.msg.Device)
		case r.Status == protocol.StatusDuplicate && r.Reason == protocol.ReasonSuperseded:
			in.NoteCloneSign(p.msg.Device, SignSuperseded, "seq "+strconv.FormatUint(p.tk.Seq, 10))
		}
	}
	reason := ""
	if r.Reason != protocol.ReasonNone {
		reason = r.Reason.String()
	}
	switch {
	case p.isGrant():
		in.metrics.GrantRequests.WithLabelValues(p.kind.String(), r.Status.String(), reason).Inc()
	case p.redeem == nil:
		in.metrics.Tickets.WithLabelValues(r.Status.String(), reason).Inc()
	}
	if r.LowBalance && p.dev != nil {
		in.metrics.LowBalance.WithLabelValues(p.dev.Account).Inc()
	}
	in.metrics.Latency.WithLabelValues(p.msg.Transport).Observe(in.now().Sub(p.start).Seconds())
}

// seal MACs the receipt with the answering device's receipt key; nil when
// there is nobody to answer or it cannot be encoded (logged).
func (in *Ingest) seal(p *Pending, r *protocol.Receipt) []byte {
	ans := p.answerer()
	if ans == nil {
		return nil
	}
	mac, err := protocol.NewHMAC(ans.ReceiptKey())
	if err != nil {
		in.log.Error("receipt key unusable", "device", p.msg.Device, "error", err)
		return nil
	}
	// The gateway's time, for a device without a real-time clock to
	// learn: inside the MAC, so the device can trust it.
	r.Time = uint64(in.now().UnixMilli())
	var e protocol.Encoder
	b, err := e.AppendReceipt(make([]byte, 0, 128), r, mac)
	if err != nil {
		in.log.Error("receipt encoding failed", "device", p.msg.Device, "error", err)
		return nil
	}
	return b
}

// commitRefusal turns a failed commit into the answer to the device.
func (in *Ingest) commitRefusal(m entrance.Message, seq uint64, err error) *refusal {
	var rf *ledger.Refusal
	switch {
	case errors.As(err, &rf):
		return rf
	case errors.Is(err, store.ErrClosed):
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonShuttingDown, Detail: "gateway is stopping"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonOverloaded, Detail: "queue full"}
	default:
		in.log.Error("commit failed", "device", m.Device, "seq", seq, "error", err)
		return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStoreError, Detail: err.Error()}
	}
}
