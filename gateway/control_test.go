package gateway_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// controlKey writes a provider's control key pair into dir and returns
// its signer and the public key file.
func controlKey(t *testing.T, dir string) (protocol.Signer, string) {
	t.Helper()
	k, _ := keyfile.GenerateEd25519()
	pub, _ := k.EncodePublic()
	path := filepath.Join(dir, "control.pub")
	if err := keyfile.WriteNew(path, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := protocol.NewEd25519Signer(k.Private)
	return s, path
}

// TestCommandRefusals: the gateway's answers to what comes down the
// control channel, each with its reason and counted: a forged command is
// refused and does not use up its seq; a command not yet valid waits; an
// expired one, one with a tariff file that lacks a device's tariff, and
// one of an action this gateway does not know are refused and use up
// their seqs; one out of order is refused and applied once the gap is
// filled; one for another gateway is ignored; bytes that are no command
// are dropped.
func TestCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	ctl, pub := controlKey(t, dir)
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) { c.Control.Trust = []string{pub} })
	ctx := context.Background()
	now := time.Now()
	cmd := func(seq uint64, id string) protocol.Command {
		return protocol.Command{Target: "gw-test", Seq: seq, ID: id, Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-" + id},
			NotBefore: uint64(now.UnixMilli()), Expiry: uint64(now.Add(time.Hour).UnixMilli())}
	}
	sign := func(c protocol.Command, s protocol.Signer) []byte {
		b, err := protocol.SignCommand(&c, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	_, forger, _ := ed25519.GenerateKey(nil)
	fs, _ := protocol.NewEd25519Signer(forger)
	handle := func(b []byte) {
		t.Helper()
		if err := tg.HandleCommand(ctx, b); err != nil {
			t.Fatalf("HandleCommand: %v", err)
		}
	}
	handle(sign(cmd(1, "forged"), fs))
	handle(sign(cmd(1, "forged"), fs)) // the same bytes again: counted, not acknowledged twice
	future := cmd(1, "future")
	future.NotBefore, future.Expiry = uint64(now.Add(time.Hour).UnixMilli()), uint64(now.Add(2*time.Hour).UnixMilli())
	if err := tg.HandleCommand(ctx, sign(future, ctl)); !errors.Is(err, gateway.ErrNotYet) {
		t.Fatalf("a command not valid yet: %v", err)
	}
	expired := cmd(1, "expired")
	expired.NotBefore, expired.Expiry = uint64(now.Add(-2*time.Hour).UnixMilli()), uint64(now.Add(-time.Hour).UnixMilli())
	handle(sign(expired, ctl))
	handle(sign(cmd(3, "third"), ctl)) // out of order: seq 2 is missing
	bad := cmd(2, "bad-tariff")
	bad.Action, bad.Vouchers, bad.Tariffs, bad.Effective = protocol.ActionTariffSet, nil, "tariffs:\n  - {id: other, currency: EUR, period: none, price: 1 EUR, per: 1}\n", bad.NotBefore
	handle(sign(bad, ctl))
	handle(sign(cmd(3, "third"), ctl)) // in order now
	handle(unknownAction(t, ctl, 4, now))
	other := cmd(5, "other")
	other.Target = "gw-elsewhere"
	handle(sign(other, ctl))
	handle([]byte("not a command"))
	ps, err := tg.Books().Commands()
	if err != nil || len(ps) != 1 || ps[0].Seq != 4 {
		t.Fatalf("progress: %+v %v\n%s", ps, err, tg.logs.String())
	}
	_, page := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
	for _, w := range []struct {
		labels string
		n      float64
	}{
		{`action="revoke_voucher",outcome="refused",reason="command_forged"`, 1},
		{`action="revoke_voucher",outcome="duplicate",reason="command_forged"`, 1},
		{`action="revoke_voucher",outcome="not_yet",reason="none"`, 1},
		{`action="revoke_voucher",outcome="refused",reason="command_expired"`, 1},
		{`action="revoke_voucher",outcome="refused",reason="command_out_of_order"`, 1},
		{`action="tariff_set",outcome="refused",reason="command_invalid"`, 1},
		{`action="revoke_voucher",outcome="applied",reason="none"`, 1},
		{`action="set_moon",outcome="refused",reason="command_invalid"`, 1},
		{`action="revoke_voucher",outcome="not_ours",reason="none"`, 1},
		{`action="unknown",outcome="malformed",reason="unexpected_tag"`, 1},
	} {
		if got := metricValue(page, "farthing_commands_total{"+w.labels+"}"); got != w.n {
			t.Errorf("farthing_commands_total{%s} = %v; want %v", w.labels, got, w.n)
		}
	}
	// Every answer that is not a repeat is in the stream: forged,
	// expired, out of order, invalid tariff, applied, unknown action.
	var acks []string
	for cursor := uint64(0); ; {
		o, ok, err := tg.Books().Next(cursor)
		if err != nil || !ok {
			break
		}
		cursor = o.Seq
		if m, err := strict.Decode(o.Bytes); err == nil && m.CommandAck != nil {
			acks = append(acks, m.CommandAck.Command+":"+m.CommandAck.Reason.String())
		}
	}
	want := "forged:command_forged expired:command_expired third:command_out_of_order bad-tariff:command_invalid third:none moon-1:command_invalid"
	if got := strings.Join(acks, " "); got != want {
		t.Errorf("acknowledgements in the stream: %s; want %s", got, want)
	}
}

// unknownAction signs a command with an action this build does not know.
func unknownAction(t *testing.T, s protocol.Signer, seq uint64, now time.Time) []byte {
	t.Helper()
	p, err := cbor.Marshal(map[int]any{0: 14, 1: "gw-test", 3: seq, 4: "moon-1", 5: uint64(now.UnixMilli()),
		6: uint64(now.Add(time.Hour).UnixMilli()), 7: "set_moon", 30: "full"})
	if err != nil {
		t.Fatal(err)
	}
	prot := protocol.AppendProtected(nil, protocol.AlgEdDSA, s.KeyID())
	sig, err := s.Sign(nil, protocol.AppendToBeSigned(nil, protocol.AlgEdDSA, prot, p))
	if err != nil {
		t.Fatal(err)
	}
	return protocol.AppendEnvelope(nil, &protocol.Envelope{Alg: protocol.AlgEdDSA, KeyID: s.KeyID(), Protected: prot, Payload: p, Signature: sig})
}
