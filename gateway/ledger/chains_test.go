package ledger

import (
	"context"
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// chainBooks is books with a settable clock, one-minute windows for
// provider utility and a signer, for payword chain tests.
type chainBooks struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	bk    *Books
	terms *Terms
	t0    time.Time // a window's start
	now   time.Time
}

func newChainBooks(t *testing.T) *chainBooks {
	cb := &chainBooks{t: t, ctx: context.Background(), st: openStore(t, filepath.Join(t.TempDir(), "state.db")),
		t0: time.UnixMilli(1_790_000_000_000 - 1_790_000_000_000%60_000)}
	if err := Init(cb.ctx, cb.st); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	signer, _ := protocol.NewEd25519Signer(priv)
	cb.now = cb.t0
	cb.bk = New(cb.st, Config{Signer: signer, Now: func() time.Time { return cb.now }})
	cb.terms = testTerms(t, 1_000_000_000_000)
	cb.terms.Policies["utility"] = metering.Policy{Length: 60_000}
	return cb
}

// status runs f in a store operation and returns its receipt's status.
func (cb *chainBooks) status(f func(tx *store.Tx) (protocol.Receipt, bool, error)) protocol.Status {
	cb.t.Helper()
	var rc protocol.Receipt
	if err := cb.st.Do(cb.ctx, func(tx *store.Tx) error {
		var err error
		rc, _, err = f(tx)
		return err
	}); err != nil {
		cb.t.Fatal(err)
	}
	return rc.Status
}

// outbox is every record in the outbox, decoded, in seq order.
func (cb *chainBooks) outbox() []*strict.Message {
	cb.t.Helper()
	var out []*strict.Message
	for cursor := uint64(0); ; {
		o, ok, err := cb.bk.Next(cursor)
		if err != nil {
			cb.t.Fatal(err)
		}
		if !ok {
			return out
		}
		cursor = o.Seq
		m, err := strict.Decode(o.Bytes)
		if err != nil {
			cb.t.Fatal(err)
		}
		out = append(out, m)
	}
}

// A chain's progress records follow the aggregate windows: each names the
// aggregate whose window holds its paywords' usage, none is sent before
// that window seals, a chain's records follow one another without a gap
// or an overlap, and the records naming an aggregate add up to its
// proven quantity, which is all of its usage here (a payword device
// alone on its meter).
func TestChainProgressFollowsWindows(t *testing.T) {
	cb := newChainBooks(t)
	ctx, st, bk, terms, t0 := cb.ctx, cb.st, cb.bk, cb.terms, cb.t0
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	const n, units = 1000, 5
	type chain struct {
		id   protocol.ChainID
		seed protocol.Payword
	}
	chains := []chain{{protocol.ChainID{1, 2, 3}, protocol.Payword{9}}, {protocol.ChainID{4, 5, 6}, protocol.Payword{8}}}
	do := func(f func(tx *store.Tx) (protocol.Receipt, bool, error)) {
		t.Helper()
		if s := cb.status(f); s != protocol.StatusAccepted {
			t.Fatalf("status %d", s)
		}
	}
	commit := func(at time.Duration, number uint32, start uint64) {
		t.Helper()
		cb.now = t0.Add(at)
		ch := chains[number-1]
		c := protocol.Commitment{Device: "plug-1", Chain: ch.id, Number: number, Meter: "energy_wh", Units: units, Length: n,
			Anchor: protocol.PaywordWalk(&ch.id, ch.seed, n), Start: start, Expiry: uint64(t0.Add(time.Hour).UnixMilli())}
		var enc protocol.Encoder
		raw, err := enc.AppendCommitment(nil, &c, mac)
		if err != nil {
			t.Fatal(err)
		}
		do(func(tx *store.Tx) (protocol.Receipt, bool, error) {
			return bk.ApplyCommitment(tx, terms, testPayer, &c, raw)
		})
	}
	pay := func(at time.Duration, number, i uint32) {
		t.Helper()
		cb.now = t0.Add(at)
		ch := chains[number-1]
		pw := protocol.PaywordTicket{Device: "plug-1", Chain: ch.id, Index: i, Word: protocol.PaywordWalk(&ch.id, ch.seed, uint64(n-i))}
		pb, err := protocol.AppendPaywordTicket(nil, &pw)
		if err != nil {
			t.Fatal(err)
		}
		do(func(tx *store.Tx) (protocol.Receipt, bool, error) {
			return bk.ApplyPayword(tx, terms, testPayer, Payword{Ticket: &pw, Raw: pb})
		})
	}
	report := func(at time.Duration) int {
		t.Helper()
		cb.now = t0.Add(at)
		if err := bk.CloseWindows(ctx, terms, cb.now); err != nil {
			t.Fatal(err)
		}
		k, err := bk.ReportChains(ctx, terms, cb.now)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	commit(0, 1, 0)
	pay(1*time.Second, 1, 10)
	pay(2*time.Second, 1, 20)
	if k := report(3 * time.Second); k != 0 {
		t.Fatalf("%d progress records while their window is open", k)
	}
	pay(61*time.Second, 1, 35) // window 2: window 1 seals
	pay(62*time.Second, 1, 36)
	if k := report(63 * time.Second); k != 1 {
		t.Fatalf("%d progress records after window 1 sealed; want 1", k)
	}
	pay(125*time.Second, 1, 50) // window 3; window 2 seals on the clock first
	// The chain is renewed in window 3: the next one starts where it ended.
	commit(126*time.Second, 2, 50*units)
	pay(127*time.Second, 2, 7)
	if k := report(190 * time.Second); k != 3 {
		t.Fatalf("%d progress records after windows 2 and 3 sealed; want 3 (window 2, and both chains in window 3)", k)
	}
	if k := report(250 * time.Second); k != 0 {
		t.Fatalf("%d progress records with nothing new", k)
	}
	views, err := New(st, Config{}).Chains("plug-1")
	if err != nil || len(views) != 2 || views[0].Last != 50 || views[1].Last != 7 || views[1].Register != 50*units+7*units {
		t.Fatalf("the device's chains %+v, %v", views, err)
	}

	proven := map[uint64]uint64{} // aggregate seq → its proven quantity
	covered := map[uint64]uint64{}
	next := map[string]uint32{} // by commitment: where the chain's last record ended
	for _, m := range cb.outbox() {
		switch {
		case m.Aggregate != nil:
			a := m.Aggregate
			if a.Proven != a.Quantity {
				t.Errorf("aggregate %d: proven %d of %d", a.Seq, a.Proven, a.Quantity)
			}
			proven[a.Seq] = a.Proven
		case m.Progress != nil:
			p := m.Progress
			if _, ok := proven[p.Aggregate]; !ok {
				t.Fatalf("progress %d names aggregate %d, not sent before it", p.Seq, p.Aggregate)
			}
			if p.From != next[string(p.Commitment)] {
				t.Fatalf("progress %d starts at %d; the chain's last record ended at %d", p.Seq, p.From, next[string(p.Commitment)])
			}
			next[string(p.Commitment)] = p.To
			covered[p.Aggregate] += uint64(p.To-p.From) * units
		}
	}
	if len(next) != 2 || len(proven) != 3 {
		t.Fatalf("the records reach %v over %d aggregates; want two chains over 3", next, len(proven))
	}
	for _, to := range next {
		if to != 50 && to != 7 {
			t.Fatalf("a chain's records end at %d; want 50 and 7", to)
		}
	}
	for seq, q := range proven {
		if covered[seq] != q {
			t.Errorf("aggregate %d proves %d; its records %d", seq, q, covered[seq])
		}
	}
}

// A version-6 state file's chain progress is migrated: the usage it had
// not reported goes upstream, naming no aggregate.
func TestChainProgressMigrated(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "state.db"))
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	id := protocol.ChainID{7}
	rec := chainRecord{Commitment: protocol.Commitment{Device: "plug-1", Chain: id, Number: 1, Meter: "energy_wh", Units: 1, Length: 100},
		Account: "home", Provider: "utility", Last: 40, Raw: []byte{0xd2}}
	old := metering.NewStateWriter().Uint(40).String(string(rec.LastWord[:])).Uint(15).String(string(rec.SegFromWord[:])).Int(123)
	if err := st.Do(ctx, func(stx *store.Tx) error {
		b := stx.Raw().Bucket(bucketChains)
		if err := b.Put(chainKey("plug-1", id), rec.encodeTerms()); err != nil {
			return err
		}
		if err := b.Put(chainStateKey("plug-1", id), old); err != nil {
			return err
		}
		if err := b.Put(chainDirtyKey("plug-1", id), []byte{1}); err != nil {
			return err
		}
		if err := b.Put(chainNumberKey("plug-1"), putU64(1)); err != nil {
			return err
		}
		return stx.Raw().Bucket(bucketMeta).Put(metaSchemaVersion, putU64(6))
	}); err != nil {
		t.Fatal(err)
	}
	if err := Init(ctx, st); err != nil {
		t.Fatal(err)
	}
	var due []dueSegment
	if err := st.View(func(tx *bolt.Tx) error {
		got, ok, err := loadChain(tx.Bucket(bucketChains), "plug-1", id)
		if err != nil || !ok || got.Last != 40 || got.SegFrom != 15 || got.SegWindow != nil || got.SegAccount != "home" {
			t.Fatalf("migrated chain %+v, %v", got, err)
		}
		if ds, err := getDeviceState(tx.Bucket(bucketDevices), "plug-1"); err != nil || ds.Chain.ID != id || ds.Chain.Last != 40 {
			t.Fatalf("the device's active chain after the migration: %+v, %v", ds.Chain, err)
		}
		due, err = dueSegments(tx, 10)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].from != 15 || due[0].to != 40 || due[0].aggregate != 0 || due[0].account != "home" {
		t.Fatalf("due segments %+v; want 15..40 of home, naming no aggregate", due)
	}
}

// A payword held by a plausibility rule moves the chain, but its usage is
// in the hold, not in an aggregate: the chain's progress records skip it,
// and those of the window still add up to its aggregate's proven
// quantity.
func TestHeldPaywordLeavesAGap(t *testing.T) {
	cb := newChainBooks(t)
	bk, terms, t0 := cb.bk, cb.terms, cb.t0
	payer := testPayer
	payer.Rules = map[string]*metering.Rules{"energy_wh": {MaxJump: 200}}
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	id, seed := protocol.ChainID{8}, protocol.Payword{1}
	const n, units = 1000, 5
	c := protocol.Commitment{Device: "plug-1", Chain: id, Number: 1, Meter: "energy_wh", Units: units, Length: n,
		Anchor: protocol.PaywordWalk(&id, seed, n), Expiry: uint64(t0.Add(time.Hour).UnixMilli())}
	var enc protocol.Encoder
	raw, _ := enc.AppendCommitment(nil, &c, mac)
	status := cb.status
	if s := status(func(tx *store.Tx) (protocol.Receipt, bool, error) {
		return bk.ApplyCommitment(tx, terms, payer, &c, raw)
	}); s != protocol.StatusAccepted {
		t.Fatalf("commitment: status %d", s)
	}
	for k, step := range []struct {
		i    uint32
		want protocol.Status
	}{{10, protocol.StatusAccepted}, {100, protocol.StatusHeld}, {110, protocol.StatusAccepted}} {
		cb.now = t0.Add(time.Duration(k+1) * time.Second)
		pw := protocol.PaywordTicket{Device: "plug-1", Chain: id, Index: step.i, Word: protocol.PaywordWalk(&id, seed, uint64(n-step.i))}
		pb, _ := protocol.AppendPaywordTicket(nil, &pw)
		if s := status(func(tx *store.Tx) (protocol.Receipt, bool, error) {
			return bk.ApplyPayword(tx, terms, payer, Payword{Ticket: &pw, Raw: pb})
		}); s != step.want {
			t.Fatalf("index %d: status %d; want %d", step.i, s, step.want)
		}
	}
	cb.now = t0.Add(2 * time.Minute)
	if err := bk.CloseWindows(cb.ctx, terms, cb.now); err != nil {
		t.Fatal(err)
	}
	if k, err := bk.ReportChains(cb.ctx, terms, cb.now); err != nil || k != 2 {
		t.Fatalf("%d progress records, %v; want 2 (0..10 and 100..110)", k, err)
	}
	var spans [][2]uint32
	var proven, covered uint64
	for _, m := range cb.outbox() {
		if m.Aggregate != nil {
			proven += m.Aggregate.Proven
		}
		if p := m.Progress; p != nil {
			spans = append(spans, [2]uint32{p.From, p.To})
			covered += uint64(p.To-p.From) * units
		}
	}
	if len(spans) != 2 || spans[0] != [2]uint32{0, 10} || spans[1] != [2]uint32{100, 110} || proven != 100 || covered != proven {
		t.Fatalf("records %v cover %d; the aggregates prove %d; want 0..10 and 100..110, 100 units", spans, covered, proven)
	}
}

// A payword hashed down to the chain's last payword before the
// transaction (PrecheckPayword) is accepted without hashing inside; a
// check made for another payword, or against a payword the chain has
// moved past, proves nothing, and the payword is hashed inside, where a
// wrong one is refused.
func TestPaywordPrecheck(t *testing.T) {
	cb := newChainBooks(t)
	bk, terms, t0 := cb.bk, cb.terms, cb.t0
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	id, seed := protocol.ChainID{9}, protocol.Payword{3}
	const n = 100
	word := func(i uint32) protocol.Payword { return protocol.PaywordWalk(&id, seed, uint64(n-i)) }
	c := protocol.Commitment{Device: "plug-1", Chain: id, Number: 1, Meter: "energy_wh", Units: 1, Length: n,
		Anchor: word(0), Expiry: uint64(t0.Add(time.Hour).UnixMilli())}
	var enc protocol.Encoder
	raw, _ := enc.AppendCommitment(nil, &c, mac)
	if s := cb.status(func(tx *store.Tx) (protocol.Receipt, bool, error) {
		return bk.ApplyCommitment(tx, terms, testPayer, &c, raw)
	}); s != protocol.StatusAccepted {
		t.Fatalf("commitment: status %d", s)
	}
	apply := func(pw protocol.PaywordTicket, pre *PaywordPrecheck) (protocol.Status, error) {
		pb, _ := protocol.AppendPaywordTicket(nil, &pw)
		var rc protocol.Receipt
		err := cb.st.Do(cb.ctx, func(tx *store.Tx) error {
			var err error
			rc, _, err = bk.ApplyPayword(tx, terms, testPayer, Payword{Ticket: &pw, Raw: pb, Pre: pre})
			return err
		})
		return rc.Status, err
	}
	pw := func(i uint32) protocol.PaywordTicket {
		return protocol.PaywordTicket{Device: "plug-1", Chain: id, Index: i, Word: word(i)}
	}
	p3 := pw(3)
	if _, err := PrecheckPayword(&protocol.PaywordTicket{Device: "plug-1", Chain: id, Index: 3, Word: word(4)}, 0, word(0)); !isReason(err, protocol.ReasonPaywordMismatch) {
		t.Fatalf("a payword that does not hash down to the base: %v; want payword_mismatch", err)
	}
	pre, err := PrecheckPayword(&p3, 0, word(0))
	if pre == nil || err != nil {
		t.Fatalf("a good payword failed its precheck: %v", err)
	}
	if s, err := apply(p3, pre); err != nil || s != protocol.StatusAccepted {
		t.Fatalf("payword 3 with its precheck: %v %v", s, err)
	}
	// A check against index 3, now the chain's last, for payword 5; then
	// used for a forged payword 5: it proves nothing for it.
	p5 := pw(5)
	pre5, _ := PrecheckPayword(&p5, 3, word(3))
	forged := protocol.PaywordTicket{Device: "plug-1", Chain: id, Index: 5, Word: protocol.Payword{0xee}}
	if _, err := apply(forged, pre5); !isReason(err, protocol.ReasonPaywordMismatch) {
		t.Fatalf("a forged payword with another payword's check: %v; want payword_mismatch", err)
	}
	// A check against index 0, which the chain moved past: hashed inside.
	p7 := pw(7)
	stale, _ := PrecheckPayword(&p7, 0, word(0))
	if s, err := apply(p7, stale); err != nil || s != protocol.StatusAccepted {
		t.Fatalf("payword 7 with a stale check: %v %v", s, err)
	}
}

func isReason(err error, r protocol.Reason) bool {
	var rf *Refusal
	return errors.As(err, &rf) && rf.Reason == r
}
