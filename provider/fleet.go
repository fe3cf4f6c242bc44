package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// The provider's side of the control channel: the receiver signs each
// command with the provider's control key, numbers it in its target's
// sequence in the books (one commit), publishes it on the transports the
// gateways follow (CommandPublisher), serves it to gateways that poll
// over HTTP, and books each gateway's acknowledgement from its aggregate
// stream, so FleetStatus says which gateway applied what and which is
// behind.

// CommandPublisher puts a command where gateways follow commands: a
// JetStream stream (jsrecv) or an MQTT broker (mqttrecv).
type CommandPublisher interface {
	PublishCommand(ctx context.Context, t protocol.CommandTarget, id string, b []byte) error
}

// Fleet configures the receiver's control channel.
type Fleet struct {
	// Key is the provider's control key (Ed25519); its public key is what
	// gateways trust (control.trust).
	Key protocol.Signer
	// Groups lists each fleet group's gateways, for FleetStatus.
	Groups map[string][]string
	// Publishers get every command pushed (and those not yet acknowledged
	// again, by Republish).
	Publishers []CommandPublisher
	// Validity is a command's expiry after it is pushed; default 7 days.
	Validity time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time

	mu     sync.Mutex
	pushed chan struct{} // closed at each push: long polls wake
}

// ErrNoFleet: the receiver has no control key.
var ErrNoFleet = errors.New("receiver: no control channel (no control key)")

// SetFleet turns the control channel on.
func (r *Receiver) SetFleet(f *Fleet) {
	if f.Validity <= 0 {
		f.Validity = 7 * 24 * time.Hour
	}
	if f.Now == nil {
		f.Now = time.Now
	}
	f.pushed = make(chan struct{})
	r.fleet = f
}

// Push signs c, numbers it next in its target's sequence and publishes
// it. An empty ID gets a random one; a zero NotBefore is now; a zero
// Expiry is NotBefore plus the fleet's validity. The command is in the
// books before it is published: one that could not be published goes out
// with Republish, or to a polling gateway.
func (r *Receiver) Push(ctx context.Context, c protocol.Command) (protocol.Command, []byte, error) {
	f := r.fleet
	if f == nil {
		return c, nil, ErrNoFleet
	}
	now := f.Now()
	if c.ID == "" {
		var b [6]byte
		rand.Read(b[:])
		c.ID = "cmd-" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
	}
	if c.NotBefore == 0 {
		c.NotBefore = uint64(now.UnixMilli())
	}
	if c.Expiry == 0 {
		c.Expiry = c.NotBefore + uint64(f.Validity.Milliseconds())
	}
	c.Seq = 1 // validated with a seq; the books number it
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	var signed []byte
	seq, err := r.books.PushCommand(ctx, c.TargetOf().Key(), c.ID, func(seq uint64) ([]byte, error) {
		c.Seq = seq
		var err error
		signed, err = protocol.SignCommand(&c, f.Key)
		return signed, err
	})
	if err != nil {
		return c, nil, err
	}
	c.Seq = seq
	f.mu.Lock()
	close(f.pushed)
	f.pushed = make(chan struct{})
	f.mu.Unlock()
	var perr error
	for _, p := range f.Publishers {
		if err := p.PublishCommand(ctx, c.TargetOf(), c.ID, signed); err != nil {
			perr = errors.Join(perr, err)
		}
	}
	return c, signed, perr
}

// ErrCommandID: a command id pushed before.
var ErrCommandID = errors.New("receiver: a command with this id was pushed before")

// pollRecheck is how often a waiting poll looks at the books again: a
// command pushed through another receiver of the same database wakes no
// poll here.
const pollRecheck = 2 * time.Second

// PollCommands returns the commands of the targets after the seqs in
// after (by protocol.CommandTarget.Key), in order, at most limit; with
// none, it waits up to wait for a push (through this receiver, or
// another of the same books: seen within pollRecheck).
func (r *Receiver) PollCommands(ctx context.Context, after map[string]uint64, limit int, wait time.Duration) ([][]byte, error) {
	f := r.fleet
	if f == nil {
		return nil, ErrNoFleet
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	recheck := time.NewTicker(pollRecheck)
	defer recheck.Stop()
	for {
		f.mu.Lock()
		pushed := f.pushed
		f.mu.Unlock()
		var out [][]byte
		for _, key := range slices.Sorted(maps.Keys(after)) {
			cmds, err := r.books.CommandsAfter(ctx, key, after[key], limit-len(out))
			if err != nil {
				return nil, err
			}
			out = append(out, cmds...)
		}
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-pushed:
		case <-recheck.C:
		case <-deadline.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// CommandStatus is one command pushed, and what the gateways answered.
type CommandStatus struct {
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Group     bool      `json:"group,omitempty"`
	Seq       uint64    `json:"seq"`
	NotBefore time.Time `json:"not_before"`
	Expiry    time.Time `json:"expiry"`
	// Expected are the gateways that should apply it: the target, or the
	// group's gateways (Fleet.Groups) and any other that answered.
	Expected []string `json:"expected"`
	Applied  []string `json:"applied"`
	// Refused maps a gateway to its reason.
	Refused map[string]string `json:"refused,omitempty"`
	// Pending are the expected gateways with no answer yet.
	Pending []string `json:"pending"`
	// Effective is a tariff_set's effective time.
	Effective *time.Time `json:"effective,omitempty"`
}

// FleetStatus is every command pushed and its answers, the local changes
// gateways reported, and the gateways behind.
type FleetStatus struct {
	Commands []CommandStatus `json:"commands"`
	// Local are changes operators made at gateways by hand (a tariff file
	// edited there), as the gateways reported them.
	Local []protocol.CommandAck `json:"local"`
	// Foreign are answers to commands this receiver never pushed: a
	// command signed by another key (refused command_forged) or pushed by
	// another receiver.
	Foreign []protocol.CommandAck `json:"foreign"`
	// Behind maps a gateway to the commands it has not answered.
	Behind map[string][]string `json:"behind"`
}

// FleetStatus reports which gateway applied which command.
func (r *Receiver) FleetStatus(ctx context.Context) (*FleetStatus, error) {
	st, _, err := r.fleetStatus(ctx)
	return st, err
}

// fleetStatus is FleetStatus with the command log it was made from:
// Commands[i] is log[i].
func (r *Receiver) fleetStatus(ctx context.Context) (*FleetStatus, [][]byte, error) {
	log, err := r.books.CommandLog(ctx)
	if err != nil {
		return nil, nil, err
	}
	acks, err := r.books.Acks(ctx)
	if err != nil {
		return nil, nil, err
	}
	byCmd := map[string][]protocol.CommandAck{}
	st := &FleetStatus{Behind: map[string][]string{}, Local: []protocol.CommandAck{}, Foreign: []protocol.CommandAck{}, Commands: []CommandStatus{}}
	for _, a := range acks {
		if a.Local {
			st.Local = append(st.Local, a)
			continue
		}
		byCmd[a.Command] = append(byCmd[a.Command], a)
	}
	for _, b := range log {
		_, c, err := strict.DecodeCommand(b)
		if err != nil {
			return nil, nil, fmt.Errorf("receiver: a command in the books does not decode: %w", err)
		}
		cs := r.commandStatus(&c, byCmd[c.ID])
		for _, g := range cs.Pending {
			st.Behind[g] = append(st.Behind[g], c.ID)
		}
		st.Commands = append(st.Commands, cs)
		delete(byCmd, c.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(byCmd)) {
		st.Foreign = append(st.Foreign, byCmd[id]...)
	}
	return st, log, nil
}

// commandStatus is c with its acknowledgements.
func (r *Receiver) commandStatus(c *protocol.Command, acks []protocol.CommandAck) CommandStatus {
	cs := CommandStatus{ID: c.ID, Action: c.Action, Target: c.Target, Group: c.Group, Seq: c.Seq,
		NotBefore: time.UnixMilli(int64(c.NotBefore)).UTC(), Expiry: time.UnixMilli(int64(c.Expiry)).UTC(), Applied: []string{}, Pending: []string{}}
	if c.Action == protocol.ActionTariffSet {
		e := time.UnixMilli(int64(c.Effective)).UTC()
		cs.Effective = &e
	}
	expected := map[string]bool{}
	if !c.Group {
		expected[c.Target] = true
	} else if r.fleet != nil {
		for _, g := range r.fleet.Groups[c.Target] {
			expected[g] = true
		}
	}
	answered := map[string]bool{}
	for _, a := range acks {
		expected[a.Gateway], answered[a.Gateway] = true, true
		if a.Refused {
			if cs.Refused == nil {
				cs.Refused = map[string]string{}
			}
			cs.Refused[a.Gateway] = a.Reason.String()
		} else {
			cs.Applied = append(cs.Applied, a.Gateway)
		}
	}
	for g := range expected {
		cs.Expected = append(cs.Expected, g)
		if !answered[g] {
			cs.Pending = append(cs.Pending, g)
		}
	}
	sort.Strings(cs.Expected)
	sort.Strings(cs.Applied)
	sort.Strings(cs.Pending)
	return cs
}

// Republish publishes again, to the publishers that lose what a gateway
// does not take (MQTT), every unexpired command some expected gateway has
// not answered. A gateway answers a command it has seen as a duplicate,
// so this is harmless.
func (r *Receiver) Republish(ctx context.Context) (int, error) {
	f := r.fleet
	if f == nil {
		return 0, nil
	}
	var pubs []CommandPublisher
	for _, p := range f.Publishers {
		if l, ok := p.(interface{ Lossy() bool }); ok && l.Lossy() {
			pubs = append(pubs, p)
		}
	}
	if len(pubs) == 0 {
		return 0, nil
	}
	st, log, err := r.fleetStatus(ctx)
	if err != nil {
		return 0, err
	}
	now := f.Now()
	n := 0
	for i, cs := range st.Commands {
		if len(cs.Pending) == 0 || !now.Before(cs.Expiry) {
			continue
		}
		for _, p := range pubs {
			if err := p.PublishCommand(ctx, protocol.CommandTarget{Name: cs.Target, Group: cs.Group}, cs.ID, log[i]); err != nil {
				return n, err
			}
		}
		n++
	}
	return n, nil
}

// DoubleFix is the command that settles a voucher credited twice: an
// adjustment at the gateway that credited it the second time, taking the
// second credit back, idempotent by its reference.
func DoubleFix(d DoubleRedemption) string {
	if d.Resolved != nil || d.Gateway == "" {
		return ""
	}
	return "farthing fleet push adjust --gateway " + d.Gateway + " --account " + d.Account + " --amount -" +
		metering.FormatNanos(metering.Nanos(d.Amount)) + " --currency " + d.Currency + " --reason double_redemption --voucher " +
		d.Voucher + " --ref double-" + d.Voucher
}
