package gateway

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/gateway/upstream/httpsink"
	"github.com/farthing-iot/farthing/gateway/upstream/jetstreamsink"
	"github.com/farthing-iot/farthing/gateway/upstream/mqttsink"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// control is the gateway's end of the control channel: it checks each
// command (signature, target, validity, what its effect needs) and has
// the books apply it once, in order, with its acknowledgement.
type control struct {
	trust  map[string]protocol.Verifier // the providers' control keys, by key id
	groups map[string]bool
	root   []byte // the fleet's device root, for provisioned devices; nil: none
	skew   time.Duration
}

// CrashAfterCommandEnv names a fault injection for tests of the control
// channel: the gateway kills itself with SIGKILL right after it committed
// the command with this id, before its transport learns it was answered.
const CrashAfterCommandEnv = "FARTHING_CRASH_AFTER_COMMAND"

// ErrNotYet: a command whose not-before is further ahead of the gateway's
// clock than control.max_skew; it must come again later.
var ErrNotYet = upstream.ErrNotYet

// newControl reads the control section's keys.
func newControl(c ControlConfig) (*control, error) {
	ct := &control{trust: map[string]protocol.Verifier{}, groups: map[string]bool{}, skew: c.MaxSkew}
	for _, path := range c.Trust {
		k, err := keyfile.Load(path)
		if err != nil {
			return nil, fmt.Errorf("%w: control.trust: %v", ErrConfig, err)
		}
		if k.Public == nil && k.Private != nil {
			k.Public = k.Private.Public().(ed25519.PublicKey)
		}
		if k.Public == nil {
			return nil, fmt.Errorf("%w: control.trust: %s is a %s, want a provider's control public key", ErrConfig, path, k.Kind())
		}
		v, err := protocol.NewEd25519Verifier(k.Public)
		if err != nil {
			return nil, fmt.Errorf("%w: control.trust: %s: %v", ErrConfig, path, err)
		}
		ct.trust[string(v.KeyID())] = v
	}
	for _, g := range c.Groups {
		ct.groups[g] = true
	}
	if c.DeviceRoot != "" {
		k, err := keyfile.Load(c.DeviceRoot)
		if err != nil || k.Master == nil {
			return nil, fmt.Errorf("%w: control.device_root: want a master secret file (farthing keygen --type hmac --name device-root): %v", ErrConfig, err)
		}
		ct.root = k.Master
	}
	return ct, nil
}

// targets are the sequences this gateway follows: its own, then its
// groups'.
func (ct *control) targets(gateway string) []protocol.CommandTarget {
	out := []protocol.CommandTarget{{Name: gateway}}
	for _, g := range slices.Sorted(maps.Keys(ct.groups)) {
		out = append(out, protocol.CommandTarget{Name: g, Group: true})
	}
	return out
}

// HandleCommand checks one command and has the books answer it: applied,
// refused with a reason, or a duplicate. It returns nil once the answer
// is durable (the transport may then acknowledge the message), ErrNotYet
// for a command to hold back, and any other error when the command must
// come again (the books could not commit).
func (g *Gateway) HandleCommand(ctx context.Context, b []byte) error {
	ct := g.control
	if ct == nil {
		return errors.New("control: the control channel is off")
	}
	env, c, err := strict.DecodeCommand(b)
	unreadable := err
	if err != nil {
		// One whose header reads (an action of a newer provider, say) is
		// answered in its sequence, refused; anything else is dropped.
		if env, c, err = strict.DecodeCommandHeader(b); err != nil {
			g.commandEvent("", "malformed", protocol.ReasonOf(unreadable))
			g.log.Warn("control: a message that is not a command: dropped", "reason", protocol.ReasonOf(unreadable).String(), "error", unreadable)
			return nil
		}
	}
	if (!c.Group && c.Target != g.cfg.GatewayID) || (c.Group && !ct.groups[c.Target]) {
		g.commandEvent(c.Action, "not_ours", protocol.ReasonNone)
		g.log.Warn("control: a command for another target: ignored", "command", c.ID, "target", c.Target, "group", c.Group)
		return nil
	}
	snap := g.ingest.Snapshot()
	in := ledger.CommandInput{Cmd: c, Raw: b}
	in.Refuse, in.Detail = ct.check(&env, &c, g.cfg.Clock())
	if in.Refuse == protocol.ReasonNone && unreadable != nil {
		in.Refuse, in.Detail = protocol.ReasonCommandInvalid, "a command this gateway cannot read: "+unreadable.Error()
	}
	if in.Refuse == protocol.ReasonNone && c.NotBefore > uint64(g.cfg.Clock().Add(ct.skew).UnixMilli()) {
		g.commandEvent(c.Action, "not_yet", protocol.ReasonNone)
		g.log.Info("control: a command not valid yet waits; it comes again", "command", c.ID, "target", c.Target, "seq", c.Seq,
			"not_before", time.UnixMilli(int64(c.NotBefore)).UTC().Format(time.RFC3339))
		return ErrNotYet
	}
	if in.Refuse == protocol.ReasonNone {
		in.Refuse, in.Detail = g.prepareEffect(snap, &in)
	}
	res, err := g.Books().ApplyCommand(ctx, &snap.Terms, in)
	if err != nil {
		return fmt.Errorf("control: command %s: %w", c.ID, err)
	}
	if c.ID != "" && os.Getenv(CrashAfterCommandEnv) == c.ID {
		g.log.Warn("control: killing this process after committing the command, before its transport is told (" + CrashAfterCommandEnv + ")")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	g.noteCommand(&c, res)
	if res.Outcome == ledger.CommandApplied {
		g.afterCommand(&c)
	}
	return nil
}

// check is what a command is refused for whatever the books hold: a
// signature by no trusted key, or its expiry passed.
func (ct *control) check(env *protocol.Envelope, c *protocol.Command, now time.Time) (protocol.Reason, string) {
	v, ok := ct.trust[string(env.KeyID)]
	if !ok {
		return protocol.ReasonCommandForged, fmt.Sprintf("signed by key %x, not a trusted control key", env.KeyID)
	}
	if err := env.Verify(v, nil); err != nil {
		return protocol.ReasonCommandForged, "its signature does not verify"
	}
	if uint64(now.UnixMilli()) >= c.Expiry {
		return protocol.ReasonCommandExpired, fmt.Sprintf("expired at %s", time.UnixMilli(int64(c.Expiry)).UTC().Format(time.RFC3339))
	}
	return protocol.ReasonNone, ""
}

// prepareEffect checks what the books cannot: a tariff_set's file (it
// parses, and has every tariff a device uses), a provision's device (new,
// with known terms). It fills in the tariff file.
func (g *Gateway) prepareEffect(snap *ingest.Snapshot, in *ledger.CommandInput) (protocol.Reason, string) {
	c := &in.Cmd
	switch c.Action {
	case protocol.ActionTariffSet:
		if strings.HasPrefix(c.ID, "local-") {
			return protocol.ReasonCommandInvalid, "a tariff version's id must not begin with local-"
		}
		set, err := metering.ParseTariffs("command "+c.ID, []byte(c.Tariffs))
		if err != nil {
			return protocol.ReasonCommandInvalid, err.Error()
		}
		for _, d := range snap.Registry.Devices() {
			for meter, id := range d.Tariffs {
				if set.Get(id) == nil {
					return protocol.ReasonCommandInvalid, fmt.Sprintf("device %s prices meter %s by tariff %s, which the new version lacks", d.ID, meter, id)
				}
			}
		}
		in.Tariffs = []byte(c.Tariffs)
	case protocol.ActionProvision:
		if g.control.root == nil {
			return protocol.ReasonCommandInvalid, "this gateway has no control.device_root to derive a provisioned device's keys from"
		}
		if snap.Registry.Device(c.Device) != nil {
			return protocol.ReasonCommandInvalid, fmt.Sprintf("device %s is registered here already", c.Device)
		}
		e, err := g.provisionedEntry(c)
		if err == nil {
			_, err = registry.CheckTerms(e, snap)
		}
		if err != nil {
			return protocol.ReasonCommandInvalid, err.Error()
		}
	}
	return protocol.ReasonNone, ""
}

// provisionedEntry is the registry entry a provision command makes.
func (g *Gateway) provisionedEntry(c *protocol.Command) (registry.Entry, error) {
	master, err := protocol.DeviceMaster(g.control.root, c.Device)
	if err != nil {
		return registry.Entry{}, err
	}
	e := registry.Entry{ID: c.Device, KeyType: "ed25519", PublicKey: hex.EncodeToString(c.PublicKey), Secret: hex.EncodeToString(master),
		Account: c.Account, Provider: c.Provider, Tariffs: map[string]string{}}
	for _, m := range c.Meters {
		e.Tariffs[m.Meter] = m.Tariff
	}
	return e, nil
}

// noteCommand counts and logs what the books did with a command.
func (g *Gateway) noteCommand(c *protocol.Command, res ledger.CommandResult) {
	g.commandEvent(c.Action, res.Outcome.String(), res.Reason)
	switch res.Outcome {
	case ledger.CommandApplied:
		g.log.Info("control: command applied", "command", c.ID, "action", c.Action, "target", c.Target, "seq", c.Seq)
	case ledger.CommandRefused:
		g.log.Warn("control: command refused; the refusal goes upstream", "command", c.ID, "action", c.Action, "target", c.Target,
			"seq", c.Seq, "reason", res.Reason.String(), "detail", res.Detail)
	case ledger.CommandDuplicate: // every command at each start over JetStream: not worth a line each
		g.log.Debug("control: command answered before", "command", c.ID, "target", c.Target, "seq", c.Seq)
	}
}

// commandEvent counts a command's outcome.
func (g *Gateway) commandEvent(action, outcome string, reason protocol.Reason) {
	if action == "" {
		action = "unknown"
	}
	g.metrics.Commands.WithLabelValues(action, outcome, reason.String()).Inc()
}

// afterCommand brings the running gateway up to an applied command:
// tariffs, devices and revocations come from the books at the next
// snapshot, which it takes now.
func (g *Gateway) afterCommand(c *protocol.Command) {
	switch c.Action {
	case protocol.ActionTariffSet, protocol.ActionRevokeDevice, protocol.ActionProvision:
		if err := g.Reload(); err != nil {
			g.log.Error("control: the applied command does not take effect until the configuration reloads", "command", c.ID, "error", err)
		}
	}
}

// withControlState adds what commands left in force to a registry file:
// the provisioned devices (a device of the file with the same id wins)
// and the revoked keys.
func (g *Gateway) withControlState(books *ledger.Books, rf *registry.File) error {
	st, err := books.ControlState()
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range rf.Devices {
		have[e.ID] = true
	}
	if g.control != nil && g.control.root != nil {
		for _, raw := range st.Provisioned {
			_, c, err := strict.DecodeCommand(raw)
			if err != nil || have[c.Device] {
				continue
			}
			if e, err := g.provisionedEntry(&c); err == nil {
				rf.Devices = append(rf.Devices, e)
			}
		}
	}
	revoked := map[string]bool{}
	for _, k := range st.Keys {
		revoked[string(k)] = true
		rf.RevokedKeys = append(rf.RevokedKeys, hex.EncodeToString(k))
	}
	registry.MarkRevoked(rf, revoked) // a device whose key a command revoked is revoked, not a refused entry
	return nil
}

// tariffVersions records the local tariff file as a version when it
// changed (a local override, acknowledged upstream), and puts the tariffs
// in force now into snap.
func (g *Gateway) tariffVersions(books *ledger.Books, snap *ingest.Snapshot, haveFile bool) error {
	if haveFile {
		file, err := os.ReadFile(g.cfg.Tariffs)
		if err == nil {
			snap.Tariffs, err = metering.ParseTariffs(g.cfg.Tariffs, file) // the bytes recorded, parsed
		}
		if err != nil {
			return err
		}
		ack, _, err := books.RecordLocalTariffs(context.Background(), &snap.Terms, file)
		if err != nil {
			return fmt.Errorf("tariff versions: %w", err)
		}
		if ack != nil {
			g.log.Warn("the tariff file was changed here: recorded as tariff version "+ack.Command+", in force from now, and reported upstream as a local override",
				"version", ack.Command)
		}
	}
	versions, set, err := books.TariffVersions(&snap.Terms, g.cfg.Clock())
	if err != nil {
		return fmt.Errorf("tariff versions: %w", err)
	}
	snap.Tariffs = set
	var next int64
	now := g.cfg.Clock()
	for _, v := range versions {
		if v.Effective.After(now) && (next == 0 || v.Effective.UnixMilli() < next) {
			next = v.Effective.UnixMilli()
		}
	}
	g.nextTariff.Store(next)
	return nil
}

// startControl follows the control channel's commands, when it is on,
// until ctx ends.
func (g *Gateway) startControl(ctx context.Context, wg *sync.WaitGroup) {
	c := g.cfg.Control
	if c.Type == "" {
		return
	}
	targets := g.control.targets(g.cfg.GatewayID)
	log := func(msg string, err error) { g.log.Warn(msg, "error", err) }
	run := func() error { return nil }
	switch c.Type {
	case "jetstream":
		run = func() error {
			return jetstreamsink.Commands(ctx, jetstreamsink.CommandsConfig{URL: c.URL, Stream: c.Stream, Prefix: c.Topic,
				Gateway: g.cfg.GatewayID, Targets: targets, Name: "farthing-" + g.cfg.GatewayID + "-control"}, g.HandleCommand, log)
		}
	case "mqtt":
		run = func() error {
			return mqttsink.Commands(ctx, mqttsink.CommandsConfig{Broker: c.URL, ClientID: "farthing-" + g.cfg.GatewayID + "-control",
				Username: c.Username, Password: c.Password, Prefix: c.Topic, Targets: targets}, g.HandleCommand, log)
		}
	case "http":
		h := http.Header{}
		for k, v := range c.Header {
			h.Set(k, v)
		}
		run = func() error {
			return httpsink.Commands(ctx, httpsink.CommandsConfig{URL: c.URL, Header: h, Gateway: g.cfg.GatewayID, Targets: targets,
				Wait: c.PollWait, After: g.commandCursor}, g.HandleCommand, log)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := run(); err != nil {
			g.log.Error("control channel stopped", "error", err)
		}
	}()
	g.log.Info("following the control channel", "type", c.Type, "url", c.URL, "groups", c.Groups)
}

// commandCursor is each target's last seq answered for good, by
// protocol.CommandTarget.Key.
func (g *Gateway) commandCursor() (map[string]uint64, error) {
	ps, err := g.Books().Commands()
	out := map[string]uint64{}
	for _, p := range ps {
		out[protocol.CommandTarget{Name: p.Target, Group: p.Group}.Key()] = p.Seq
	}
	return out, err
}
