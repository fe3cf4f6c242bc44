package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/protocol"
)

// paywordClient is a devicefw client of a provisioned device, with a
// chain of 4096 steps of 10 Wh committed to from register start.
func paywordClient(t *testing.T, tg *testGateway, id string, number uint32, start uint64, seed byte) (*devicefw.Client, *devicefw.Chain) {
	t.Helper()
	s := tg.secrets[id]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: id, Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 8*128), SlotSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	ch := new(devicefw.Chain)
	terms := protocol.Commitment{Device: id, Chain: protocol.ChainID{seed, byte(number)}, Number: number, Meter: "energy_wh", Units: 10,
		Start: start, Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}
	if err := ch.Init(terms, 0, protocol.Payword{seed, 1}, 4096, make([]devicefw.ChainFrame, devicefw.ChainFrames(4096))); err != nil {
		t.Fatal(err)
	}
	return c, ch
}

// TestPaywordOverCoAP: a device commits to a chain and reports usage as
// paywords over CoAP/DTLS; each is charged as the register it stands for
// (10 Wh a step at 0.30 EUR/kWh), a repeat is a duplicate, and a forged
// payword, an index that goes back, a chain never committed, another
// device's chain, a replayed commitment, a commitment with a gap and an
// index past the chain are each refused with their own reason, nothing
// charged. A renewed chain goes on from the register reached.
func TestPaywordOverCoAP(t *testing.T) {
	tg := startGateway(t, []devSpec{{"pw-1", "hmac", "fleet"}, {"pw-2", "hmac", "fleet"}})
	c, ch := paywordClient(t, tg, "pw-1", 1, 0, 7)
	d, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "pw-1", PSK: tg.secrets["pw-1"].DTLSPSK(), Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	post := func(b []byte) protocol.Receipt {
		t.Helper()
		r, err := d.Send(ctx, b)
		if err != nil && err != devicefw.ErrNotPending {
			t.Fatalf("post: %v", err)
		}
		return r
	}
	want := func(what string, r protocol.Receipt, st protocol.Status, reason protocol.Reason, charged uint64) {
		t.Helper()
		if r.Status != st || r.Reason != reason || r.Charged != charged {
			t.Fatalf("%s: %+v; want %v %v, charged %d", what, r, st, reason, charged)
		}
	}
	// A payword before its chain's commitment.
	early := protocol.PaywordTicket{Device: "pw-1", Chain: ch.Commitment().Chain, Index: 1, Word: protocol.Payword{1}}
	eb, _ := protocol.AppendPaywordTicket(nil, &early)
	want("payword before the commitment", post(eb), protocol.StatusRejected, protocol.ReasonChainUnknown, 0)

	r, err := d.Commit(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	want("commitment", r, protocol.StatusAccepted, 0, 0)
	if r.Seq != protocol.PaywordSeq(1, 0) {
		t.Fatalf("commitment receipt seq %d", r.Seq)
	}
	const step = 3_000_000 // 10 Wh at 0.30 EUR/kWh, nanos
	r, err = d.ReportPayword(ctx, ch, 1)
	if err != nil {
		t.Fatal(err)
	}
	want("index 1", r, protocol.StatusAccepted, 0, step)
	r, err = d.ReportPayword(ctx, ch, 5) // four steps skipped at once
	if err != nil {
		t.Fatal(err)
	}
	want("index 5", r, protocol.StatusAccepted, 0, 4*step)
	_, last, _ := c.NextPending(0)
	if last != nil {
		t.Fatalf("a ticket is still pending after its receipt")
	}
	// The same payword again: a duplicate with the original charge.
	w5 := protocol.PaywordWalk(&ch.Commitment().Chain, protocol.Payword{7, 1}, 4096-5)
	p5 := protocol.PaywordTicket{Device: "pw-1", Chain: ch.Commitment().Chain, Index: 5, Word: w5}
	b5, _ := protocol.AppendPaywordTicket(nil, &p5)
	want("index 5 again", post(b5), protocol.StatusDuplicate, 0, 4*step)
	// A forged payword, an index that goes back, one too far, one past
	// the chain.
	forged := p5
	forged.Index, forged.Word[0] = 6, forged.Word[0]^1
	fb, _ := protocol.AppendPaywordTicket(nil, &forged)
	ops := tg.Store().Stats().Ops
	want("a forged payword", post(fb), protocol.StatusRejected, protocol.ReasonPaywordMismatch, 0)
	// Refused by hashing it down to the last payword accepted, before the
	// committer: a forger's hashing is not everyone's wait.
	if n := tg.Store().Stats().Ops - ops; n != 0 {
		t.Errorf("a forged payword after an accepted one took %d operations of the committer; want 0", n)
	}
	back := p5
	back.Index = 3
	bb, _ := protocol.AppendPaywordTicket(nil, &back)
	want("an index that goes back", post(bb), protocol.StatusRejected, protocol.ReasonPaywordBackwards, 0)
	far := p5
	far.Index = 5 + protocol.MaxPaywordSteps + 1
	if far.Index <= 4096 {
		t.Fatal("test chain too long for the too-far case")
	}
	fab, _ := protocol.AppendPaywordTicket(nil, &far)
	want("an index past the chain", post(fab), protocol.StatusRejected, protocol.ReasonChainExhausted, 0)
	// Another device's payword in this device's session.
	other := p5
	other.Device = "pw-2"
	ob, _ := protocol.AppendPaywordTicket(nil, &other)
	want("another device's payword", post(ob), protocol.StatusRejected, protocol.ReasonDeviceMismatch, 0)
	// The commitment again (the same bytes): its receipt again; another
	// commitment with number 1: replayed; a next chain that leaves a gap.
	r, _ = d.Commit(ctx, ch)
	want("the commitment again", r, protocol.StatusDuplicate, 0, 0)
	_, replay := paywordClient(t, tg, "pw-1", 1, 50, 8)
	r, _ = d.Commit(ctx, replay)
	want("another chain numbered 1", r, protocol.StatusRejected, protocol.ReasonChainReplayed, 0)
	_, gap := paywordClient(t, tg, "pw-1", 2, 60, 9) // the meter stands at 50
	r, _ = d.Commit(ctx, gap)
	want("a chain with a gap", r, protocol.StatusRejected, protocol.ReasonChainGap, 0)
	// The renewal: chain 2 from register 50, where chain 1 stands.
	_, next := paywordClient(t, tg, "pw-1", 2, 50, 10)
	r, _ = d.Commit(ctx, next)
	want("the next chain", r, protocol.StatusAccepted, 0, 0)
	r, err = d.ReportPayword(ctx, next, 2)
	if err != nil {
		t.Fatal(err)
	}
	want("chain 2, index 2", r, protocol.StatusAccepted, 0, 2*step)
	if r.Seq != protocol.PaywordSeq(2, 2) {
		t.Fatalf("seq %d; want %d", r.Seq, protocol.PaywordSeq(2, 2))
	}
	// Chain 1 is over for the device: its next payword is below the seq
	// chain 2 reached.
	r, _ = d.ReportPayword(ctx, ch, 6)
	if r.Status != protocol.StatusDuplicate || r.Charged != 0 {
		t.Fatalf("chain 1 after chain 2: %+v; want a duplicate charging nothing", r)
	}
	rep, err := tg.Books().Inspect(nil)
	if err != nil || !rep.Reconcile.Balanced || uint64(rep.Reconcile.ReceiptsCharged) != 7*step {
		t.Fatalf("books: %+v %v; want balanced, %d charged", rep.Reconcile, err, 7*step)
	}
}

// TestPaywordOverMQTT: the same device path over the embedded broker:
// commitment, paywords, receipts matched to the pending tickets.
func TestPaywordOverMQTT(t *testing.T) {
	tg := startGateway(t, []devSpec{{"pw-m", "hmac", "fleet"}})
	c, ch := paywordClient(t, tg, "pw-m", 1, 1000, 3)
	d := connectPaywordDevice(t, tg, "pw-m", c)
	defer d.Close()
	if err := d.Commit(ch); err != nil {
		t.Fatal(err)
	}
	if r := d.next(t); r.Status != protocol.StatusAccepted || r.Seq != protocol.PaywordSeq(1, 0) {
		t.Fatalf("commitment: %+v", r)
	}
	var charged uint64
	for i := uint32(1); i <= 20; i++ {
		if _, err := d.ReportPayword(ch, i*3); err != nil {
			t.Fatal(err)
		}
		r := d.next(t)
		if r.Status != protocol.StatusAccepted || r.Seq != protocol.PaywordSeq(1, i*3) {
			t.Fatalf("index %d: %+v", i*3, r)
		}
		charged += r.Charged
	}
	if charged != 60*3_000_000 || d.Pending() != 0 {
		t.Fatalf("charged %d, %d pending; want %d and none", charged, d.Pending(), 60*3_000_000)
	}
}
