package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
)

// TestPaywordStepIsTheSpecifiedHash: one step is SHA-256("FPW1" || chain
// || w), and a walk of k steps is k steps.
func TestPaywordStepIsTheSpecifiedHash(t *testing.T) {
	chain := ChainID{1, 2, 3, 4, 5, 6, 7, 8}
	var w Payword
	for i := range w {
		w[i] = byte(i)
	}
	want := sha256.Sum256(append(append([]byte("FPW1"), chain[:]...), w[:]...))
	if got := PaywordStep(&chain, &w); got != Payword(want) {
		t.Fatalf("step: %x; want %x", got, want)
	}
	two := PaywordStep(&chain, &w)
	two = PaywordStep(&chain, &two)
	if got := PaywordWalk(&chain, w, 2); got != two {
		t.Fatalf("walk of 2: %x; want %x", got, two)
	}
	other := chain
	other[0] ^= 1
	if PaywordStep(&other, &w) == PaywordStep(&chain, &w) {
		t.Fatal("the chain id does not change the step")
	}
}

func testCommitment() Commitment {
	return Commitment{Device: "plug-0001", Chain: ChainID{9, 9, 9, 9, 9, 9, 9, 9}, Number: 1, Meter: "energy_wh", Units: 10,
		Length: 1 << 20, Anchor: Payword{7}, Start: 1000, Expiry: 1_800_000_000_000, Epoch: 3}
}

// TestCommitmentRoundTrip: a commitment MAC'd with the ticket key reads
// back as written, its MAC verifies, and a change to any byte of the
// payload is refused or fails the MAC.
func TestCommitmentRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{5}, 32)
	mac, _ := NewHMAC(key)
	c := testCommitment()
	var enc Encoder
	b, err := enc.AppendCommitment(nil, &c, mac)
	if err != nil {
		t.Fatal(err)
	}
	var env Envelope
	var got Commitment
	if err := ParseCommitment(b, &env, &got); err != nil || got != c {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if err := env.Verify(mac, nil); err != nil {
		t.Fatalf("MAC: %v", err)
	}
	if got.Register(got.Length) != 1000+10*(1<<20) {
		t.Fatalf("register at the end: %d", got.Register(got.Length))
	}
	for _, bad := range []func(*Commitment){
		func(c *Commitment) { c.Number = 0 },
		func(c *Commitment) { c.Units = 0 },
		func(c *Commitment) { c.Length = 0 },
		func(c *Commitment) { c.Expiry = 0 },
		func(c *Commitment) { c.Units, c.Length = 1<<40, 1<<30 },
		func(c *Commitment) { c.Start = ^uint64(0) },
		func(c *Commitment) { c.Meter = "" },
	} {
		c := testCommitment()
		bad(&c)
		if _, err := enc.AppendCommitment(nil, &c, mac); err == nil {
			t.Errorf("a bad commitment was written: %+v", c)
		}
	}
}

// TestPaywordTicketRoundTrip: a payword ticket reads back as written, is
// told from a COSE ticket by its first byte, and is refused with a field
// too many, the wrong kind, an index 0 or a short payword.
func TestPaywordTicketRoundTrip(t *testing.T) {
	p := PaywordTicket{Device: "plug-0001", Chain: ChainID{1}, Index: 4_000_000_000, Word: Payword{0xaa, 0xbb}}
	b, err := AppendPaywordTicket(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxPaywordTicketSize || !IsPaywordTicket(b) {
		t.Fatalf("%d bytes (limit %d), IsPaywordTicket %v", len(b), MaxPaywordTicketSize, IsPaywordTicket(b))
	}
	var got PaywordTicket
	if err := ParsePaywordTicket(b, &got); err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	t.Logf("a payword ticket of a 9-character device id: %d bytes", len(b))
	mac, _ := NewHMAC(bytes.Repeat([]byte{5}, 32))
	var enc Encoder
	tk, _ := enc.AppendTicket(nil, &Ticket{Device: "d", Seq: 1, Time: 1, Readings: []Reading{{"m", 1}}}, mac)
	if IsPaywordTicket(tk) {
		t.Fatal("a COSE ticket taken for a payword ticket")
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"kind":          func(b []byte) []byte { b[2] = 1; return b },
		"trailing byte": func(b []byte) []byte { return append(b, 0) },
		"short payword": func(b []byte) []byte { b[len(b)-33] = 0x58; return b[:len(b)-1] },
		"index 0": func(b []byte) []byte {
			q, _ := AppendPaywordTicket(nil, &PaywordTicket{Device: "d", Index: 1})
			q[len(q)-35] = 0
			return q
		},
		"no fields":     func([]byte) []byte { return []byte{0xa0} },
		"unknown field": func(b []byte) []byte { b[0] = 0xa6; return append(b, 5, 0) },
	} {
		var got PaywordTicket
		if err := ParsePaywordTicket(mutate(append([]byte(nil), b...)), &got); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.As(err, new(*Error)) {
			t.Errorf("%s: %v is not a protocol error", name, err)
		}
	}
}

// FuzzPaywordMessages: any bytes either fail to parse as a payword ticket
// or a commitment, or parse into a value that encodes back to exactly
// those bytes (one message, one encoding).
func FuzzPaywordMessages(f *testing.F) {
	p := PaywordTicket{Device: "plug-0001", Chain: ChainID{1, 2}, Index: 77, Word: Payword{3}}
	pb, _ := AppendPaywordTicket(nil, &p)
	f.Add(pb)
	c := testCommitment()
	mac, _ := NewHMAC(bytes.Repeat([]byte{5}, 32))
	var enc Encoder
	cb, _ := enc.AppendCommitment(nil, &c, mac)
	f.Add(cb)
	ed, _ := NewEd25519Signer(ed25519.NewKeyFromSeed(make([]byte, 32)))
	pr, _ := enc.AppendChainProgress(nil, &ChainProgress{Gateway: "gw", Seq: 1, Provider: "p", Account: "a", Commitment: cb, To: 3}, ed)
	f.Add(pr)
	linked := ChainProgress{Gateway: "gw", Seq: 5, Provider: "p", Account: "a", Commitment: cb, From: 3, To: 9, Aggregate: 4, Epoch: 7}
	pr2, err := enc.AppendChainProgress(nil, &linked, ed)
	if err != nil {
		f.Fatal(err)
	}
	var back ChainProgress
	var env Envelope
	if err := ParseChainProgress(pr2, &env, &back); err != nil || back.Aggregate != 4 || back.From != 3 || back.Epoch != 7 {
		f.Fatalf("a progress record naming its aggregate: %+v, %v", back, err)
	}
	linked.Aggregate = 5
	if _, err := enc.AppendChainProgress(nil, &linked, ed); err == nil {
		f.Fatal("a progress record naming an aggregate not before it was made")
	}
	f.Add(pr2)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p PaywordTicket
		if ParsePaywordTicket(b, &p) == nil {
			again, err := AppendPaywordTicket(nil, &p)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("payword ticket %x parsed as %+v, encodes as %x (%v)", b, p, again, err)
			}
		}
		var penv Envelope
		var pp ChainProgress
		if ParseChainProgress(b, &penv, &pp) == nil {
			again, err := AppendChainProgressPayload(nil, &pp)
			if err != nil || !bytes.Equal(again, penv.Payload) {
				t.Fatalf("progress payload %x parsed as %+v, encodes as %x (%v)", penv.Payload, pp, again, err)
			}
		}
		var env Envelope
		var c Commitment
		if ParseCommitment(b, &env, &c) == nil {
			again, err := AppendCommitmentPayload(nil, &c)
			if err != nil || !bytes.Equal(again, env.Payload) {
				t.Fatalf("commitment payload %x parsed as %+v, encodes as %x (%v)", env.Payload, c, again, err)
			}
		}
	})
}
