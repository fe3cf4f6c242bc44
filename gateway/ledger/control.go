package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// The control channel's books: which command of each target's sequence
// the gateway applied last, the commands it answered (by id), and what
// commands left in force — revoked vouchers and keys, provisioned
// devices. Applying a command, its effect and its acknowledgement in the
// outbox are one commit: after a crash a command is either applied and
// acknowledged, or neither.
//
// bucketControl keys:
//
//	"s" 0 ("g"|"t") target → u64: the target's last seq applied or refused for good
//	"c" 0 id               → u64 the acknowledgement's seq in the file, u8 outcome, u16 reason
//	"o" 0 id               → u64: the target's next seq when the command was refused out of order
//	"f" 0 SHA-256          → 1: a forged command's bytes, answered once
//	"v" 0 voucher          → u64: the command seq that revoked it
//	"k" 0 key id           → u64: the command seq that revoked it
//	"d" 0 device           → the provision command, as signed
var bucketControl = []byte("control")

// CommandOutcome is what the books did with a command.
type CommandOutcome uint8

// Command outcomes.
const (
	// CommandApplied: its effect and its acknowledgement committed.
	CommandApplied CommandOutcome = iota + 1
	// CommandRefused: refused with a reason; the acknowledgement says so.
	// A refusal for good (expired, invalid) uses up the command's seq; one
	// that may be put right (forged, out of order) does not.
	CommandRefused
	// CommandDuplicate: answered before; nothing was written.
	CommandDuplicate
)

func (o CommandOutcome) String() string {
	switch o {
	case CommandApplied:
		return "applied"
	case CommandRefused:
		return "refused"
	case CommandDuplicate:
		return "duplicate"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// CommandInput is a command the gateway checked before the books: its
// signature, its target, its validity and what its effect needs.
type CommandInput struct {
	Cmd protocol.Command
	// Refuse, if set, is why the gateway refuses it whatever the books
	// hold (command_forged, command_expired, command_invalid), with Detail.
	Refuse protocol.Reason
	Detail string
	// Raw is the command as signed (kept for a provision).
	Raw []byte
	// Tariffs is a tariff_set's tariff file, checked to parse.
	Tariffs []byte
}

// CommandResult is what ApplyCommand did.
type CommandResult struct {
	Outcome CommandOutcome
	Reason  protocol.Reason
	Detail  string
	// Ack is the acknowledgement written to the outbox (nil for a
	// duplicate or without a signer).
	Ack *protocol.CommandAck
}

// targetKey keys a target's last seq.
func targetKey(c *protocol.Command) []byte {
	kind := "t"
	if c.Group {
		kind = "g"
	}
	return joinKey("s", kind+c.Target)
}

// ApplyCommand applies one command exactly once, in its target's order:
// the next seq of its target is applied (or refused for good) with its
// effect and its acknowledgement in one commit; a seq already used is a
// duplicate (nothing written); a later seq is refused as out of order and
// may come again once the gap is filled.
func (bk *Books) ApplyCommand(ctx context.Context, t *Terms, in CommandInput) (CommandResult, error) {
	var res CommandResult
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		var err error
		res, err = bk.applyCommand(stx, t, &in)
		return err
	})
	return res, err
}

func (bk *Books) applyCommand(stx *store.Tx, t *Terms, in *CommandInput) (CommandResult, error) {
	c := &in.Cmd
	cb := stx.Bolt().Bucket(bucketControl)
	if prev := cb.Get(joinKey("c", c.ID)); len(prev) == 11 {
		return CommandResult{Outcome: CommandDuplicate, Reason: protocol.Reason(uint16(prev[9])<<8 | uint16(prev[10]))}, nil
	}
	last := getU64(cb.Get(targetKey(c)))
	res := CommandResult{Outcome: CommandRefused, Reason: in.Refuse, Detail: in.Detail}
	consume := true
	switch {
	case in.Refuse == protocol.ReasonCommandForged:
		// Its seq and id are not the provider's word: it is known by its
		// bytes, and answered once.
		sum := sha256.Sum256(in.Raw)
		forged := joinKey("f", string(sum[:]))
		if cb.Get(forged) != nil {
			return CommandResult{Outcome: CommandDuplicate, Reason: protocol.ReasonCommandForged}, nil
		}
		if err := stx.Put(bucketControl, forged, putU64(1)); err != nil {
			return res, err
		}
		consume = false
	case c.Seq <= last:
		return CommandResult{Outcome: CommandDuplicate, Reason: protocol.ReasonCommandOutOfOrder,
			Detail: fmt.Sprintf("seq %d of %s was used by another command", c.Seq, c.Target)}, nil
	case c.Seq > last+1:
		// Refused, and answered once while its target stays where it is:
		// it may come again and again until the gap is filled.
		waiting := joinKey("o", c.ID)
		if getU64(cb.Get(waiting)) == last+1 {
			return CommandResult{Outcome: CommandDuplicate, Reason: protocol.ReasonCommandOutOfOrder}, nil
		}
		if err := stx.Put(bucketControl, waiting, putU64(last+1)); err != nil {
			return res, err
		}
		consume = false
		res.Reason, res.Detail = protocol.ReasonCommandOutOfOrder, fmt.Sprintf("seq %d of %s after %d: a command is missing", c.Seq, c.Target, last)
	case in.Refuse == protocol.ReasonNone:
		if err := bk.commandEffect(stx, t, in); err != nil {
			if !errors.Is(err, errCommandEffect) {
				return res, err
			}
			res.Reason, res.Detail = protocol.ReasonCommandInvalid, err.Error()
		} else {
			res.Outcome = CommandApplied
		}
	}
	return res, bk.answer(stx, t, c, &res, consume)
}

// answer writes c's acknowledgement of res into the outbox and, when c
// uses up its seq (consume), the target's progress and c's answer by id.
// A refusal that may be put right uses up nothing: it is answered again
// when it comes again.
func (bk *Books) answer(stx *store.Tx, t *Terms, c *protocol.Command, res *CommandResult, consume bool) error {
	if consume {
		if err := stx.Put(bucketControl, targetKey(c), putU64(c.Seq)); err != nil {
			return err
		}
	}
	ack := protocol.CommandAck{Gateway: terms(t).GatewayID, Command: c.ID, Target: c.Target, Group: c.Group, Number: c.Seq,
		Action: c.Action, Time: uint64(bk.now().UnixMilli())}
	if res.Outcome == CommandRefused {
		ack.Refused, ack.Reason = true, res.Reason
	}
	seq, err := bk.putAck(stx, &ack)
	if err != nil {
		return err
	}
	if consume {
		v := append(putU64(seq), byte(res.Outcome), byte(ack.Reason>>8), byte(ack.Reason))
		if err := stx.Put(bucketControl, joinKey("c", c.ID), v); err != nil {
			return err
		}
	}
	if bk.cfg.Signer != nil {
		res.Ack = &ack
	}
	return nil
}

// errCommandEffect marks a command whose effect cannot be applied: it is
// refused (command_invalid), and its seq used up.
var errCommandEffect = errors.New("command")

// commandEffect applies c's effect inside the command's commit.
func (bk *Books) commandEffect(stx *store.Tx, t *Terms, in *CommandInput) error {
	c := &in.Cmd
	switch c.Action {
	case protocol.ActionTariffSet:
		if len(in.Tariffs) == 0 {
			return fmt.Errorf("%w: tariff_set without a checked tariff file", errCommandEffect)
		}
		now := bk.now().UnixMilli()
		return bk.putTariffVersion(stx, tariffVersion{ID: c.ID, Effective: max(int64(c.Effective), now), Applied: now, File: in.Tariffs})
	case protocol.ActionAdjust:
		adj := Adjustment{Amount: metering.Money{Nanos: metering.Nanos(c.Amount), Currency: metering.Currency(c.Currency)}, Reason: c.Reason,
			Note: "control command " + c.ID, Voucher: c.Voucher}
		if _, err := bk.adjust(stx, t, c.Account, adj, Request{Ref: c.Ref, Credential: "control:" + c.ID}); err != nil {
			return fmt.Errorf("%w: %v", errCommandEffect, err)
		}
		return nil
	case protocol.ActionRevokeVoucher:
		for _, v := range c.Vouchers {
			if err := stx.Put(bucketControl, joinKey("v", v), putU64(c.Seq)); err != nil {
				return err
			}
		}
		return nil
	case protocol.ActionRevokeDevice:
		for _, k := range c.KeyIDs {
			if err := stx.Put(bucketControl, joinKey("k", string(k)), putU64(c.Seq)); err != nil {
				return err
			}
		}
		return nil
	case protocol.ActionProvision:
		if stx.Bolt().Bucket(bucketControl).Get(joinKey("d", c.Device)) != nil {
			return fmt.Errorf("%w: device %s was provisioned before", errCommandEffect, c.Device)
		}
		return stx.Put(bucketControl, joinKey("d", c.Device), append([]byte(nil), in.Raw...))
	}
	return fmt.Errorf("%w: unknown action %q", errCommandEffect, c.Action)
}

// putAck writes a signed acknowledgement into the outbox as the stream's
// next record and returns its seq in the file (0 without a signer).
func (bk *Books) putAck(stx *store.Tx, ack *protocol.CommandAck) (uint64, error) {
	if bk.cfg.Signer == nil {
		return 0, nil
	}
	meta := stx.Bolt().Bucket(bucketMeta)
	seq := getU64(meta.Get(metaAggSeq)) + 1
	ack.Seq, ack.Epoch = bk.wire(seq), bk.cfg.Stream.Epoch
	var enc protocol.Encoder
	b, err := enc.AppendCommandAck(nil, ack, bk.cfg.Signer)
	if err != nil {
		return 0, fmt.Errorf("%w: acknowledgement: %v", store.ErrAbort, err)
	}
	if err := putAll(stx, []write{{bucketOutbox, putU64(seq), b},
		{bucketRecords, putU64(seq), metering.NewStateWriter().String("").Int(int64(ack.Time))},
		{bucketMeta, metaAggSeq, putU64(seq)}}); err != nil {
		return 0, err
	}
	bk.cfg.OnSeal("command_ack")
	return seq, nil
}

// Revocations is what commands left in force: revoked vouchers and key
// ids, and provisioned devices (their commands, as signed).
type Revocations struct {
	Vouchers    []string
	Keys        [][]byte
	Provisioned [][]byte
}

// ControlState reads what commands left in force.
func (bk *Books) ControlState() (Revocations, error) {
	var r Revocations
	err := bk.st.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketControl).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) < 2 || k[1] != 0 {
				continue
			}
			switch k[0] {
			case 'v':
				r.Vouchers = append(r.Vouchers, string(k[2:]))
			case 'k':
				r.Keys = append(r.Keys, append([]byte(nil), k[2:]...))
			case 'd':
				r.Provisioned = append(r.Provisioned, append([]byte(nil), v...))
			}
		}
		return nil
	})
	return r, err
}

// CommandProgress is a target's last seq applied or refused for good.
type CommandProgress struct {
	Target string `json:"target"`
	Group  bool   `json:"group,omitempty"`
	Seq    uint64 `json:"seq"`
}

// Commands lists each target's progress.
func (bk *Books) Commands() ([]CommandProgress, error) {
	var out []CommandProgress
	err := bk.st.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketControl).Cursor()
		prefix := joinKey("s", "")
		for k, v := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			name := string(k[len(prefix):])
			out = append(out, CommandProgress{Target: name[1:], Group: name[0] == 'g', Seq: getU64(v)})
		}
		return nil
	})
	return out, err
}

// revoked reports whether a control command revoked key id kid.
func revokedKey(tx *bolt.Tx, kid []byte) bool {
	return tx.Bucket(bucketControl).Get(joinKey("k", string(kid))) != nil
}

// revokedVoucher reports whether a control command revoked voucher id.
func revokedVoucher(tx *bolt.Tx, id string) bool {
	return tx.Bucket(bucketControl).Get(joinKey("v", id)) != nil
}

// ControlView is what the control channel left in the books, as an
// operator sees it: the tariff versions, each sequence's progress, the
// devices provisioned and the keys and vouchers revoked by command.
type ControlView struct {
	Versions    []TariffVersion     `json:"versions"`
	Commands    []CommandProgress   `json:"commands"`
	Provisioned []ProvisionedDevice `json:"provisioned"`
	RevokedKeys []string            `json:"revoked_keys"`     // hex
	Vouchers    []string            `json:"revoked_vouchers"` // ids
}

// ProvisionedDevice is a device a command provisioned.
type ProvisionedDevice struct {
	ID        string            `json:"id"`
	Command   string            `json:"command"`
	PublicKey string            `json:"public_key"` // hex
	Account   string            `json:"account"`
	Provider  string            `json:"provider"`
	Tariffs   map[string]string `json:"tariffs"`
}

// Control returns the ControlView at now; t gives the tariffs of a file
// without versions (nil for a read of the file alone).
func (bk *Books) Control(t *Terms, now time.Time) (ControlView, error) {
	v := ControlView{Versions: []TariffVersion{}, Provisioned: []ProvisionedDevice{}, RevokedKeys: []string{}, Vouchers: []string{}}
	var err error
	if v.Versions, _, err = bk.TariffVersions(t, now); err != nil {
		return v, err
	}
	if v.Versions == nil {
		v.Versions = []TariffVersion{}
	}
	if v.Commands, err = bk.Commands(); err != nil {
		return v, err
	}
	if v.Commands == nil {
		v.Commands = []CommandProgress{}
	}
	st, err := bk.ControlState()
	if err != nil {
		return v, err
	}
	for _, k := range st.Keys {
		v.RevokedKeys = append(v.RevokedKeys, hex.EncodeToString(k))
	}
	v.Vouchers = append(v.Vouchers, st.Vouchers...)
	for _, raw := range st.Provisioned {
		_, c, err := strict.DecodeCommand(raw)
		if err != nil {
			return v, fmt.Errorf("a provision in the books does not decode: %w", err)
		}
		d := ProvisionedDevice{ID: c.Device, Command: c.ID, PublicKey: hex.EncodeToString(c.PublicKey), Account: c.Account,
			Provider: c.Provider, Tariffs: map[string]string{}}
		for _, m := range c.Meters {
			d.Tariffs[m.Meter] = m.Tariff
		}
		v.Provisioned = append(v.Provisioned, d)
	}
	return v, nil
}
