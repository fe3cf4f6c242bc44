package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/farthing-iot/farthing/gateway/store"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// refusal is a pipeline outcome other than a commit.
type refusal = ledger.Refusal

var reject = ledger.Reject

// storageFull is the answer while the store is near its bound.
func storageFull() *refusal {
	return &refusal{Status: protocol.StatusRetryLater, Reason: protocol.ReasonStorageFull, Detail: "state file near its bound"}
}

// Start classifies a device message once by its kind, checks it on the
// caller's goroutine and queues it for commit, then returns without
// waiting for the commit. Messages are committed in the order Start
// queued them, so a transport that calls Start for a device's messages in
// arrival order keeps them in that order while many are in flight.
// Bytes that name no kind, or a kind no device sends, go to the ticket
// decoder, which says why they are refused.
func (in *Ingest) Start(ctx context.Context, m entrance.Message) *Pending {
	in.received.Add(1)
	kind, _ := protocol.Classify(m.Payload)
	p := &Pending{in: in, ctx: ctx, msg: m, start: in.now(), snap: in.snap.Load(), kind: kind}
	switch kind {
	case protocol.KindPayword:
		in.startPayword(p)
	case protocol.KindCommitment:
		in.startCommitment(p)
	case protocol.KindVoucher:
		in.startVoucher(p)
	case protocol.KindTimeRequest:
		in.startTimeRequest(p)
	case protocol.KindGrantRequest:
		in.startGrantRequest(p)
	case protocol.KindRelease:
		in.startRelease(p)
	default:
		in.startTicket(p)
	}
	return p
}

// startTicket decodes, authenticates and checks a signed or MAC'd ticket
// and queues ledger.Books.Apply.
func (in *Ingest) startTicket(p *Pending) {
	dev, tk, ref := in.checkTicket(p.snap, p.msg)
	p.dev, p.tk, p.ref = dev, tk, ref
	if ref != nil {
		return
	}
	in.seen.saw(dev.ID, p.msg.Transport, p.start)
	in.enqueue(p, func(tx *store.Tx) (err error) {
		p.rc, p.fresh, err = in.books.Apply(tx, &p.snap.Terms, payerOf(p.dev, p.snap.Registry), &p.tk, p.msg.Payload)
		return err
	})
}

// startCommitment decodes and authenticates a payword chain's commitment
// as a ticket is, and queues ledger.Books.ApplyCommitment: the chain's
// index 0, a reading that charges nothing.
func (in *Ingest) startCommitment(p *Pending) {
	var c protocol.Commitment
	dev, tk, ref := in.checkCommitment(p.snap, p.msg, &c)
	p.dev, p.tk, p.ref = dev, tk, ref
	if ref != nil {
		return
	}
	in.seen.saw(dev.ID, p.msg.Transport, p.start)
	in.enqueue(p, func(tx *store.Tx) (err error) {
		p.rc, p.fresh, err = in.books.ApplyCommitment(tx, &p.snap.Terms, payerOf(p.dev, p.snap.Registry), &c, p.msg.Payload)
		if err == nil && p.fresh && p.rc.Status == protocol.StatusAccepted {
			in.paywords.accepted(dev.ID, c.Chain, 0, c.Anchor)
		}
		return err
	})
}

// startPayword checks a payword ticket's device, hashes it down to the
// device's last accepted payword when it knows it, and queues the rest of
// its check against its chain, which needs the chain's state, with its
// commit.
func (in *Ingest) startPayword(p *Pending) {
	var pw protocol.PaywordTicket
	if err := protocol.ParsePaywordTicket(p.msg.Payload, &pw); err != nil {
		p.ref = reject(protocol.ReasonOf(err), "%v", err)
		return
	}
	p.tk = protocol.Ticket{Device: pw.Device, Seq: uint64(pw.Index)}
	dev := p.snap.Registry.Device(pw.Device)
	if dev == nil {
		p.ref = reject(protocol.ReasonUnknownKey, "no device %q is registered", pw.Device)
		return
	}
	switch p.ref = in.refuseDevice(dev); {
	case p.ref != nil:
	case p.msg.Device != dev.ID:
		p.ref = reject(protocol.ReasonDeviceMismatch, "payword of device %q arrived as %q", dev.ID, p.msg.Device)
	case in.full.Load():
		p.ref = storageFull()
	}
	if p.ref != nil {
		return
	}
	p.dev = dev
	in.seen.saw(dev.ID, p.msg.Transport, p.start)
	pre, err := in.paywords.precheck(dev.ID, &pw) // the hashing, here rather than in the committer
	var rf *refusal
	if errors.As(err, &rf) {
		p.ref = rf
		return
	}
	in.enqueue(p, func(tx *store.Tx) (err error) {
		p.rc, p.fresh, err = in.books.ApplyPayword(tx, &p.snap.Terms, payerOf(p.dev, p.snap.Registry),
			ledger.Payword{Ticket: &pw, Raw: p.msg.Payload, Pre: pre})
		if p.rc.Seq != 0 {
			p.tk.Seq = p.rc.Seq // known once the chain was read; Wait reads it after the commit
		}
		if err == nil && p.fresh && p.rc.Status == protocol.StatusAccepted {
			in.paywords.accepted(dev.ID, pw.Chain, pw.Index, pw.Word)
		}
		return err
	})
}

// enqueue queues a message's commit; a queue that refuses it (closed,
// overloaded) is the message's refusal.
func (in *Ingest) enqueue(p *Pending, apply store.Op) {
	committed, err := in.books.Store().Enqueue(p.ctx, apply)
	if err != nil {
		p.ref = in.commitRefusal(p.msg, p.tk.Seq, err)
		return
	}
	p.done = committed
}

// deviceOfKey finds the device a message's key id belongs to, or refuses:
// a revoked key, a key no device has, a device that may not send.
func (in *Ingest) deviceOfKey(snap *Snapshot, kid []byte) (*registry.Device, *refusal) {
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
func (in *Ingest) refuseDevice(dev *registry.Device) *refusal {
	switch {
	case dev.Revoked:
		return reject(protocol.ReasonKeyRevoked, "device %s is revoked", dev.ID)
	case in.Suspended(dev.ID):
		return reject(protocol.ReasonDeviceSuspended, "device %s is suspended until an operator resumes it", dev.ID)
	case dev.Disabled:
		return reject(protocol.ReasonDeviceDisabled, "device %s is disabled", dev.ID)
	}
	return nil
}

// authenticate finds the device whose key made env, checks that the
// message (a "ticket" or a "commitment", naming device named) is that
// device's and came over its connection, and verifies it with the key.
func (in *Ingest) authenticate(snap *Snapshot, m entrance.Message, env *protocol.Envelope, named, what string) (*registry.Device, *refusal) {
	dev, ref := in.deviceOfKey(snap, env.KeyID)
	switch {
	case ref != nil:
		return nil, ref
	case named != dev.ID:
		return nil, reject(protocol.ReasonDeviceMismatch, "%s names device %q, its key is %q's", what, named, dev.ID)
	case m.Device != dev.ID:
		return nil, reject(protocol.ReasonDeviceMismatch, "%s of device %q arrived as %q", what, dev.ID, m.Device)
	}
	dev = dev.ForKey(env.KeyID) // a rotating device's next key, when the message uses it
	if err := in.verify(dev, env); err != nil {
		return nil, reject(protocol.ReasonOf(err), "%v", err)
	}
	return dev, nil
}

// checkTicket decodes and authenticates a ticket and checks what needs no
// state: its time, account and meters, and room in the store.
func (in *Ingest) checkTicket(snap *Snapshot, m entrance.Message) (*registry.Device, protocol.Ticket, *refusal) {
	t0 := in.now()
	env, tk, err := strict.DecodeTicket(m.Payload)
	if err != nil {
		return nil, tk, reject(protocol.ReasonOf(err), "%v", err)
	}
	dev, ref := in.authenticate(snap, m, &env, tk.Device, "ticket")
	if ref != nil {
		return nil, tk, ref
	}
	in.metrics.Verify.Observe(in.now().Sub(t0).Seconds())
	now := in.now().UnixMilli()
	if dev.GatewayDated() {
		tk.Time = uint64(now) // a device without a usable clock: its usage is dated on arrival
	} else if skew := in.cfg.MaxClockSkew.Milliseconds(); int64(tk.Time) > now+skew || int64(tk.Time) < now-skew {
		ahead := int64(tk.Time) > now
		in.skew.note(dev.ID, ahead, now)
		dir := "device_behind"
		if ahead {
			dir = "device_ahead"
		}
		in.metrics.ClockSkew.WithLabelValues(dir).Inc()
		return nil, tk, reject(protocol.ReasonClockSkew, "device time %s is more than %v from the gateway's %s",
			time.UnixMilli(int64(tk.Time)).UTC().Format(time.RFC3339), in.cfg.MaxClockSkew, time.UnixMilli(now).UTC().Format(time.RFC3339))
	}
	if tk.Account != "" && tk.Account != dev.Account {
		return nil, tk, reject(protocol.ReasonUnknownAccount, "device %s may not charge account %q", dev.ID, tk.Account)
	}
	for _, rd := range tk.Readings {
		if _, ok := dev.Tariffs[rd.Meter]; !ok {
			return nil, tk, reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", dev.ID, rd.Meter)
		}
	}
	if in.full.Load() {
		return nil, tk, storageFull()
	}
	return dev, tk, nil
}

// checkCommitment decodes and authenticates a payword chain commitment as
// checkTicket does a ticket, and returns the reading it stands for (its
// index 0) as the ticket.
func (in *Ingest) checkCommitment(snap *Snapshot, m entrance.Message, c *protocol.Commitment) (*registry.Device, protocol.Ticket, *refusal) {
	var env protocol.Envelope
	if err := protocol.ParseCommitment(m.Payload, &env, c); err != nil {
		return nil, protocol.Ticket{}, reject(protocol.ReasonOf(err), "%v", err)
	}
	tk := ledger.CommitmentTicket(c, in.now().UnixMilli())
	dev, ref := in.authenticate(snap, m, &env, c.Device, "commitment")
	if ref != nil {
		return nil, tk, ref
	}
	if _, ok := dev.Tariffs[c.Meter]; !ok {
		return nil, tk, reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", dev.ID, c.Meter)
	}
	if in.full.Load() {
		return nil, tk, storageFull()
	}
	return dev, tk, nil
}

// payerOf is who a device's tickets are charged to, as seen through the
// key the ticket used (d is the device ForKey returned).
func payerOf(d *registry.Device, reg *registry.Registry) ledger.Payer {
	p := ledger.Payer{Device: d.ID, Account: d.Account, Provider: d.Provider, Tariffs: d.Tariffs, DailyCap: d.DailyCapNanos,
		Rules: d.Plausibility, Key: [protocol.KeyIDLen]byte(d.KeyID())}
	if r := reg.Device(d.ID); r != nil {
		p.NextKey, p.RetireAt, p.Rotating = r.Rotation()
	}
	return p
}

// startTimeRequest answers a device's question for the time (a device
// without a real-time clock, before its first ticket): once the request
// is authenticated like a ticket, the answer is a receipt with seq 0, the
// gateway's time and the request's nonce, MAC'd with the device's receipt
// key. Nothing is written.
func (in *Ingest) startTimeRequest(p *Pending) {
	var env protocol.Envelope
	var r protocol.TimeRequest
	if err := protocol.ParseTimeRequest(p.msg.Payload, &env, &r); err != nil {
		p.ref = reject(protocol.ReasonOf(err), "%v", err)
		return
	}
	dev, ref := in.authenticate(p.snap, p.msg, &env, r.Device, "time request")
	if ref != nil {
		p.ref = ref
		return
	}
	p.dev = dev
	in.metrics.Transport.WithLabelValues(p.msg.Transport, "time_request").Inc()
	p.redeem = func() protocol.Receipt {
		return protocol.Receipt{Device: dev.ID, Status: protocol.StatusAccepted, Nonce: r.Nonce} // seal adds the time
	}
}

// startGrantRequest authenticates a device's grant request like a ticket
// and queues ledger.Books.Grant: the answer is a receipt whose seq is the
// request id, with the grant or a refusal.
func (in *Ingest) startGrantRequest(p *Pending) {
	var env protocol.Envelope
	var r protocol.GrantRequest
	if err := protocol.ParseGrantRequest(p.msg.Payload, &env, &r); err != nil {
		p.ref = reject(protocol.ReasonOf(err), "%v", err)
		return
	}
	p.tk.Seq = r.Request
	if !in.startDeviceRequest(p, &env, r.Device, "grant request") {
		return
	}
	if _, ok := p.dev.Tariffs[r.Meter]; !ok {
		p.ref = reject(protocol.ReasonUnknownMeter, "device %s has no tariff for meter %q", p.dev.ID, r.Meter)
		return
	}
	in.enqueue(p, func(tx *store.Tx) (err error) {
		p.rc, err = in.books.Grant(tx, &p.snap.Terms, payerOf(p.dev, p.snap.Registry), &r)
		p.fresh = err == nil
		return err
	})
}

// startRelease authenticates a device's release like a ticket and queues
// ledger.Books.ReleaseGrant.
func (in *Ingest) startRelease(p *Pending) {
	var env protocol.Envelope
	var r protocol.Release
	if err := protocol.ParseRelease(p.msg.Payload, &env, &r); err != nil {
		p.ref = reject(protocol.ReasonOf(err), "%v", err)
		return
	}
	p.tk.Seq = r.Request
	if !in.startDeviceRequest(p, &env, r.Device, "release") {
		return
	}
	in.enqueue(p, func(tx *store.Tx) (err error) {
		p.rc, err = in.books.ReleaseGrant(tx, &p.snap.Terms, payerOf(p.dev, p.snap.Registry), &r)
		p.fresh = err == nil
		return err
	})
}

// startDeviceRequest authenticates a device's request (what, naming
// device named) as a ticket is and checks there is room to write it;
// false when it was refused (p.ref).
func (in *Ingest) startDeviceRequest(p *Pending, env *protocol.Envelope, named, what string) bool {
	dev, ref := in.authenticate(p.snap, p.msg, env, named, what)
	switch {
	case ref != nil:
		p.ref = ref
	case in.full.Load():
		p.ref = storageFull()
	default:
		p.dev = dev
		in.seen.saw(dev.ID, p.msg.Transport, p.start)
		return true
	}
	return false
}
