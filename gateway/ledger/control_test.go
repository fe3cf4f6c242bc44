package ledger

import (
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

func command(seq uint64, id, action string, at time.Time) protocol.Command {
	return protocol.Command{Target: "gw-test", Seq: seq, ID: id, Action: action, NotBefore: uint64(at.UnixMilli()),
		Expiry: uint64(at.Add(time.Hour).UnixMilli())}
}

// TestTariffVersionsPriceByUsageTime: a tariff version applied before its
// effective time prices only usage after it; usage before it keeps the
// old price, to the nano, also when it arrives after the boundary; the
// command is applied once and in order.
func TestTariffVersionsPriceByUsageTime(t *testing.T) {
	gb := newGrantBooks(t, 100_000_000_000)
	local := []byte("tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.30 EUR, per: 1000}\n")
	if _, id, err := gb.bk.RecordLocalTariffs(gb.ctx, gb.terms, local); err != nil || id != "local-1" {
		t.Fatalf("local version: %q %v", id, err)
	}
	p := testPayer
	gb.ticket(p, 1, 0, 0) // the baseline
	boundary := gb.now.Add(10 * time.Second)
	c := command(1, "tariff-2", protocol.ActionTariffSet, gb.now)
	c.Tariffs, c.Effective = "tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.50 EUR, per: 1000}\n", uint64(boundary.UnixMilli())
	res, err := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: c, Tariffs: []byte(c.Tariffs)})
	if err != nil || res.Outcome != CommandApplied || res.Ack == nil || res.Ack.Refused {
		t.Fatalf("tariff_set: %+v %v", res, err)
	}
	if again, _ := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: c, Tariffs: []byte(c.Tariffs)}); again.Outcome != CommandDuplicate || again.Ack != nil {
		t.Fatalf("the same command again: %+v", again)
	}
	gb.now = gb.now.Add(5 * time.Second)
	if rc := gb.ticket(p, 2, 1000, 0); rc.Charged != 300_000_000 {
		t.Fatalf("before the boundary: %+v", rc)
	}
	gb.now = boundary.Add(time.Second)
	if rc := gb.ticket(p, 3, 2000, 0); rc.Charged != 500_000_000 {
		t.Fatalf("after the boundary: %+v", rc)
	}
	vs, set, err := gb.bk.TariffVersions(gb.terms, gb.now)
	if err != nil || len(vs) != 2 || !vs[1].InForce || vs[1].ID != "tariff-2" || set.Get("energy") == nil {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	// The aggregates name the version that priced them.
	if err := gb.bk.CloseWindows(gb.ctx, gb.terms, gb.now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	byVersion := map[string]uint64{}
	for cursor := uint64(0); ; {
		o, ok, err := gb.bk.Next(cursor)
		if err != nil || !ok {
			break
		}
		cursor = o.Seq
		if m, err := strict.Decode(o.Bytes); err == nil && m.Aggregate != nil {
			byVersion[m.Aggregate.Tariff] += m.Aggregate.Amount
		}
	}
	if byVersion["local-1"] != 300_000_000 || byVersion["tariff-2"] != 500_000_000 || len(byVersion) != 2 {
		t.Errorf("aggregates by tariff version: %v", byVersion)
	}
	gb.reconcile()
}

// TestCommandsInOrder: a command whose seq skips one is refused out of
// order and does not use up its seq; an expired one does; a revoked
// voucher and key stay revoked.
func TestCommandsInOrder(t *testing.T) {
	gb := newGrantBooks(t, 100_000_000_000)
	second := command(2, "c-2", protocol.ActionRevokeVoucher, gb.now)
	second.Vouchers = []string{"V-2"}
	res, err := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: second})
	if err != nil || res.Outcome != CommandRefused || res.Reason != protocol.ReasonCommandOutOfOrder {
		t.Fatalf("out of order: %+v %v", res, err)
	}
	if again, _ := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: second}); again.Outcome != CommandDuplicate || again.Ack != nil {
		t.Fatalf("out of order again, the gap still there: answered once: %+v", again)
	}
	first := command(1, "c-1", protocol.ActionRevokeDevice, gb.now)
	first.KeyIDs = [][]byte{testPayer.Key[:]}
	if res, _ := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: first, Refuse: protocol.ReasonCommandExpired}); res.Outcome != CommandRefused {
		t.Fatalf("expired: %+v", res)
	}
	first.ID = "c-1b"
	if res, _ := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: first}); res.Outcome != CommandDuplicate {
		t.Fatalf("an expired command uses up its seq: %+v", res)
	}
	if res, _ := gb.bk.ApplyCommand(gb.ctx, gb.terms, CommandInput{Cmd: second}); res.Outcome != CommandApplied {
		t.Fatalf("in order now: %+v", res)
	}
	rv, err := gb.bk.ControlState()
	if err != nil || len(rv.Vouchers) != 1 || rv.Vouchers[0] != "V-2" || len(rv.Keys) != 0 {
		t.Fatalf("control state: %+v %v", rv, err)
	}
	ps, _ := gb.bk.Commands()
	if len(ps) != 1 || ps[0].Seq != 2 || ps[0].Target != "gw-test" {
		t.Fatalf("progress: %+v", ps)
	}
}
