package devicefw

import (
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
)

func testTerms() protocol.Commitment {
	return protocol.Commitment{Device: "plug-1", Chain: protocol.ChainID{3, 1, 4, 1, 5, 9, 2, 6}, Number: 1, Meter: "energy_wh",
		Units: 10, Start: 500, Expiry: 1_900_000_000_000}
}

// naiveChain is the chain the slow way: every payword from the seed.
func naiveChain(id protocol.ChainID, seed protocol.Payword, n uint32) []protocol.Payword {
	g := make([]protocol.Payword, n+1) // g[k] = H^k(seed)
	g[0] = seed
	for k := uint32(1); k <= n; k++ {
		g[k] = protocol.PaywordStep(&id, &g[k-1])
	}
	w := make([]protocol.Payword, n+1) // w[i] = H^(n-i)(seed)
	for i := uint32(0); i <= n; i++ {
		w[i] = g[n-i]
	}
	return w
}

// TestChainGivesTheChainInOrder: for lengths that are and are not powers
// of two, with every index and with random skips, a Chain gives exactly
// the paywords the naive chain has, its anchor is w_0, each payword hashes
// to the one before, and it never needs more frames than ChainFrames.
func TestChainGivesTheChainInOrder(t *testing.T) {
	seed := protocol.Payword{42}
	for _, n := range []uint32{1, 2, 3, 7, 8, 100, 1000, 1024} {
		want := naiveChain(testTerms().Chain, seed, n)
		for _, skip := range []int{1, 3, 0} { // 0: random skips
			var ch Chain
			frames := make([]ChainFrame, ChainFrames(n))
			if err := ch.Init(testTerms(), 0, seed, n, frames); err != nil {
				t.Fatal(err)
			}
			if ch.Commitment().Anchor != want[0] || ch.Commitment().Length != n {
				t.Fatalf("n %d: anchor %x; want %x", n, ch.Commitment().Anchor, want[0])
			}
			rng := rand.New(rand.NewPCG(uint64(n), uint64(skip)))
			for i := uint32(0); i < n; {
				step := uint32(skip)
				if skip == 0 {
					step = 1 + uint32(rng.IntN(5))
				}
				i = min(n, i+step)
				w, err := ch.Seek(i)
				if err != nil || w != want[i] {
					t.Fatalf("n %d skip %d: w_%d = %x, %v; want %x", n, skip, i, w, err, want[i])
				}
				if ch.top > ChainFrames(n) {
					t.Fatalf("n %d: %d frames in use, more than %d", n, ch.top, ChainFrames(n))
				}
			}
			if _, err := ch.Seek(n + 1); err != ErrChainIndex {
				t.Fatalf("past the end: %v", err)
			}
		}
	}
	var ch Chain
	if err := ch.Init(testTerms(), 0, seed, 8, make([]ChainFrame, 3)); err != ErrConfig {
		t.Fatalf("too few frames: %v", err)
	}
}

// TestChainHashesLogarithmically: spending a whole chain of 2^16 costs at
// most log2(n)/2 + 1 hashes per payword on average, anchor excluded.
func TestChainHashesLogarithmically(t *testing.T) {
	const n = 1 << 16
	var ch Chain
	if err := ch.Init(testTerms(), 0, protocol.Payword{1}, n, make([]ChainFrame, ChainFrames(n))); err != nil {
		t.Fatal(err)
	}
	anchor := ch.Hashes()
	for i := uint32(1); i <= n; i++ {
		if _, err := ch.Seek(i); err != nil {
			t.Fatal(err)
		}
	}
	per := float64(ch.Hashes()-anchor) / n
	limit := float64(bits.Len32(n)-1)/2 + 1
	t.Logf("n = 2^16: %.2f hashes per payword (anchor: %d)", per, anchor)
	if per > limit {
		t.Fatalf("%.2f hashes per payword; want at most %.1f", per, limit)
	}
}

// TestReportPaywordAllocatesNothing: a payword ticket is built into its
// pending slot with no allocation, and its receipt frees it.
func TestReportPaywordAllocatesNothing(t *testing.T) {
	key := make([]byte, 32)
	mac, _ := protocol.NewHMAC(key)
	c, err := New(Config{Device: "plug-1", Meters: []string{"energy_wh"}, Signer: mac, Receipts: mac, Seq: &memStore{},
		Pending: make([]byte, 4*128), SlotSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	var ch Chain
	if err := ch.Init(testTerms(), 0, protocol.Payword{9}, 1<<12, make([]ChainFrame, ChainFrames(1<<12))); err != nil {
		t.Fatal(err)
	}
	var buf [protocol.MaxTicketSize]byte
	cm, err := c.Commit(buf[:0], &ch)
	if err != nil {
		t.Fatal(err)
	}
	var env protocol.Envelope
	var got protocol.Commitment
	if err := protocol.ParseCommitment(cm, &env, &got); err != nil || got != *ch.Commitment() {
		t.Fatalf("commitment: %+v %v", got, err)
	}
	i := uint32(0)
	allocs := testing.AllocsPerRun(100, func() {
		i++
		if _, _, err := c.ReportPayword(&ch, i); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per payword ticket", allocs)
	}
	seq, msg, ok := c.NextPending(0)
	var p protocol.PaywordTicket
	if !ok || protocol.ParsePaywordTicket(msg, &p) != nil || seq != protocol.PaywordSeq(1, p.Index) || p.Index != i {
		t.Fatalf("pending: %d %+v (the last supersedes the rest: index %d)", seq, p, i)
	}
	if c.Pending() != 1 {
		t.Fatalf("%d pending; want the newest only", c.Pending())
	}
}

type memStore struct{ v uint64 }

func (m *memStore) LoadSeq() (uint64, error) { return m.v, nil }
func (m *memStore) SaveSeq(v uint64) error   { m.v = v; return nil }

// TestChainStateSurvivesARestart: a chain saved at any point and restored
// into new frames (as after a reboot, nothing hashed) gives the same
// paywords as the naive chain from there; a state of another chain, of
// another number, truncated or with a frame out of place is refused;
// saving allocates nothing.
func TestChainStateSurvivesARestart(t *testing.T) {
	seed := protocol.Payword{7, 7}
	const n = 1000
	want := naiveChain(testTerms().Chain, seed, n)
	var ch Chain
	if err := ch.Init(testTerms(), 0, seed, n, make([]ChainFrame, ChainFrames(n))); err != nil {
		t.Fatal(err)
	}
	terms := *ch.Commitment()
	buf := make([]byte, 0, ChainStateSize(n))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := uint32(0); i < n; {
		state := ch.AppendState(buf[:0])
		if len(state) > ChainStateSize(n) {
			t.Fatalf("a state of %d bytes; ChainStateSize says %d", len(state), ChainStateSize(n))
		}
		var back Chain
		if err := back.Restore(terms, 0, state, make([]ChainFrame, ChainFrames(n))); err != nil {
			t.Fatalf("restore at index %d: %v", i, err)
		}
		if back.Hashes() != 0 || back.Index() != i {
			t.Fatalf("restored at index %d: index %d, %d hashes", i, back.Index(), back.Hashes())
		}
		i = min(n, i+1+uint32(rng.IntN(20)))
		w, err := back.Seek(i)
		if err != nil || w != want[i] {
			t.Fatalf("after a restore, w_%d = %x, %v; want %x", i, w, err, want[i])
		}
		ch = back
	}
	fresh := func() []byte {
		var c Chain
		if err := c.Init(testTerms(), 0, seed, n, make([]ChainFrame, ChainFrames(n))); err != nil {
			t.Fatal(err)
		}
		c.Seek(10)
		return c.AppendState(nil)
	}
	other := terms
	other.Chain[0] ^= 1
	renumbered := terms
	renumbered.Number++
	moved := fresh()
	copy(moved[chainStateHead+protocol.PaywordSize+4:], []byte{0, 0, 0x03, 0xe8}) // the first frame's length n: back over indexes given out
	for name, tc := range map[string]struct {
		terms protocol.Commitment
		state []byte
	}{
		"another chain":        {other, fresh()},
		"another number":       {renumbered, fresh()},
		"truncated":            {terms, fresh()[:chainStateHead+3]},
		"a frame out of place": {terms, moved},
	} {
		var c Chain
		if err := c.Restore(tc.terms, 0, tc.state, make([]ChainFrame, ChainFrames(n))); err != ErrChainState {
			t.Errorf("%s: %v; want ErrChainState", name, err)
		}
	}
	var c Chain
	if err := c.Init(testTerms(), 0, seed, n, make([]ChainFrame, ChainFrames(n))); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { buf = c.AppendState(buf[:0]) }); a != 0 {
		t.Errorf("AppendState allocates %.0f times", a)
	}
	t.Logf("the state of a chain of 2^20: at most %d bytes", ChainStateSize(1<<20))
}
