package provider_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// TestChainProgressProvenOrHeld: a chain progress record whose paywords
// prove its usage is booked into the payword totals; one that claims
// more than its paywords prove (signed by the trusted gateway all the
// same) is held with its reason, counted, its seq booked (no gap), its
// usage counted nowhere — in the file and in PostgreSQL.
func TestChainProgressProvenOrHeld(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		g := newGW(t)
		r, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mac, _ := protocol.NewHMAC(make([]byte, 32))
		id, seed := protocol.ChainID{4}, protocol.Payword{5}
		const n = 1000
		c := protocol.Commitment{Device: "d-1", Chain: id, Number: 1, Meter: "water_ml", Units: 2, Length: n,
			Anchor: protocol.PaywordWalk(&id, seed, n), Expiry: 1}
		var enc protocol.Encoder
		cb, _ := enc.AppendCommitment(nil, &c, mac)
		w := func(i uint32) protocol.Payword { return protocol.PaywordWalk(&id, seed, uint64(n-i)) }
		progress := func(seq uint64, from, to uint32, toWord protocol.Payword) []byte {
			p := protocol.ChainProgress{Gateway: "gw-1", Seq: seq, Provider: "water", Account: "flat-3", Commitment: cb,
				From: from, FromWord: w(from), To: to, ToWord: toWord, Epoch: 7}
			b, err := enc.AppendChainProgress(nil, &p, g.s)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		mustBook(t, r, progress(1, 0, 100, w(100)), provider.Accepted)
		mustBook(t, r, progress(2, 100, 250, w(250)), provider.Accepted)
		bk := mustBook(t, r, progress(3, 250, 400, w(300)), provider.PaywordUnproven) // claims 400 with payword 300
		if bk.Payword == nil || bk.Payword.Device != "d-1" {
			t.Fatalf("booking of the unproven record: %+v", bk)
		}
		mustBook(t, r, progress(2, 100, 250, w(250)), provider.Duplicate)
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Paywords) != 1 || rep.Paywords[0].Quantity != 500 || rep.Paywords[0].Records != 2 || rep.Paywords[0].Meter != "water_ml" {
			t.Fatalf("payword totals %+v; want 500 ml over 2 records", rep.Paywords)
		}
		if rep.Stats.UnprovenPaywords != 1 || rep.Stats.Paywords != 2 || len(rep.Held) != 1 || rep.Held[0].Reason != "payword_unproven" ||
			rep.Held[0].Account != "flat-3" {
			t.Fatalf("stats %+v, held %+v", rep.Stats, rep.Held)
		}
		for s, gaps := range rep.Gaps {
			if len(gaps) != 0 {
				t.Fatalf("stream %s: gaps %v (the unproven record's seq is booked)", s, gaps)
			}
		}
	})
}

// paywordStream signs a gateway's aggregates and chain progress records
// for one payword chain of device d-1 (Ed25519 commitment by devKey).
type paywordStream struct {
	t      *testing.T
	g      gw
	cb     []byte
	id     protocol.ChainID
	seed   protocol.Payword
	length uint32
}

func newPaywordStream(t *testing.T, g gw, dev protocol.Signer) *paywordStream {
	ps := &paywordStream{t: t, g: g, id: protocol.ChainID{9, 9}, seed: protocol.Payword{7}, length: 1000}
	c := protocol.Commitment{Device: "d-1", Chain: ps.id, Number: 1, Meter: "water_ml", Units: 2, Length: ps.length,
		Anchor: protocol.PaywordWalk(&ps.id, ps.seed, uint64(ps.length)), Expiry: 1}
	var enc protocol.Encoder
	var err error
	if ps.cb, err = enc.AppendCommitment(nil, &c, dev); err != nil {
		t.Fatal(err)
	}
	return ps
}

func (ps *paywordStream) w(i uint32) protocol.Payword {
	return protocol.PaywordWalk(&ps.id, ps.seed, uint64(ps.length-i))
}

// aggregate claims proven ml of payword usage at seq, for account.
func (ps *paywordStream) aggregate(seq uint64, account string, quantity, proven uint64) []byte {
	a := protocol.Aggregate{Gateway: "gw-1", Seq: seq, Epoch: 7, Provider: "water", Account: account, Meter: "water_ml",
		WindowStart: 1, WindowEnd: 2, Quantity: quantity, Amount: quantity * 1000, Currency: "EUR", Tickets: 3,
		MerkleRoot: make([]byte, 32), Proven: proven}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, ps.g.s)
	if err != nil {
		ps.t.Fatal(err)
	}
	return b
}

func (ps *paywordStream) progress(seq, aggregate uint64, from, to uint32) []byte {
	p := protocol.ChainProgress{Gateway: "gw-1", Seq: seq, Provider: "water", Account: "flat-3", Commitment: ps.cb,
		From: from, FromWord: ps.w(from), To: to, ToWord: ps.w(to), Aggregate: aggregate, Epoch: 7}
	var enc protocol.Encoder
	b, err := enc.AppendChainProgress(nil, &p, ps.g.s)
	if err != nil {
		ps.t.Fatal(err)
	}
	return b
}

// TestPaywordClaimsReconciled: an aggregate's payword quantity is proven
// by the progress records that name it, to the unit, in either order of
// arrival; a record proving a chain's index twice, or naming an aggregate
// of another account or one with nothing left to prove, is held with its
// reason; a commitment the device did not sign (with its key known) is
// held; without the key the usage is proven but counted unattested — in
// the file and in PostgreSQL.
func TestPaywordClaimsReconciled(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		g := newGW(t)
		devPub, devPriv, _ := ed25519.GenerateKey(nil)
		dev, _ := protocol.NewEd25519Signer(devPriv)
		r, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.TrustDevices(map[string]ed25519.PublicKey{"d-1": devPub}); err != nil {
			t.Fatal(err)
		}
		ps := newPaywordStream(t, g, dev)
		// Window 1: 300 ml, of which 200 ml (100 steps of 2) by paywords, proven by two records.
		mustBook(t, r, ps.aggregate(1, "flat-3", 300, 200), provider.Accepted)
		mustBook(t, r, ps.progress(2, 1, 0, 60), provider.Accepted)
		claims := func(want int) []provider.PaywordClaim {
			t.Helper()
			rep, err := r.Report()
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.PaywordClaims) != want {
				t.Fatalf("payword claims %+v; want %d", rep.PaywordClaims, want)
			}
			if n, err := r.OpenPaywordClaims(); err != nil || n != want {
				t.Fatalf("OpenPaywordClaims: %d, %v; want %d", n, err, want)
			}
			return rep.PaywordClaims
		}
		if c := claims(1)[0]; c.Claimed != 200 || c.Proven != 120 || !c.Booked || c.Reconciled() {
			t.Fatalf("half-proven claim %+v", c)
		}
		mustBook(t, r, ps.progress(3, 1, 60, 100), provider.Accepted)
		claims(0)
		// Window 2 arrives after its proof (transports do not keep order).
		bk := mustBook(t, r, ps.progress(5, 4, 100, 150), provider.Accepted)
		if !bk.Payword.Attested {
			t.Fatalf("a commitment signed by the device's known key: %+v", bk.Payword)
		}
		if c := claims(1)[0]; c.Booked || c.Proven != 100 {
			t.Fatalf("early claim %+v", c)
		}
		mustBook(t, r, ps.aggregate(4, "flat-3", 100, 100), provider.Accepted)
		claims(0)
		// The refusals, each held with its reason.
		for name, tc := range map[string]struct {
			b    []byte
			want string
		}{
			"an index proven twice":              {ps.progress(6, 4, 140, 160), "below index 150"},
			"an aggregate with nothing to prove": {ps.progress(7, 1, 150, 160), "no payword usage"},
		} {
			bk := mustBook(t, r, tc.b, provider.PaywordUnproven)
			if !strings.Contains(bk.Unproven, tc.want) {
				t.Errorf("%s: held because %q; want it to say %q", name, bk.Unproven, tc.want)
			}
		}
		mustBook(t, r, ps.aggregate(8, "flat-4", 50, 40), provider.Accepted)
		if bk := mustBook(t, r, ps.progress(9, 8, 150, 170), provider.PaywordUnproven); !strings.Contains(bk.Unproven, "flat-4") {
			t.Errorf("a record naming another account's aggregate: %q", bk.Unproven)
		}
		forger := newPaywordStream(t, g, mustSigner(t)) // the same chain, committed by another key
		forger.cb = newPaywordStream(t, g, mustSigner(t)).cb
		if bk := mustBook(t, r, forger.progress(10, 0, 150, 170), provider.PaywordUnproven); !strings.Contains(bk.Unproven, "not the device's") {
			t.Errorf("a commitment the device did not sign: %q", bk.Unproven)
		}
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Paywords) != 2 {
			t.Fatalf("payword totals %+v", rep.Paywords)
		}
		if p := rep.Paywords[0]; p.Account != "flat-3" || p.Quantity != 300 || p.Claimed != 300 || p.Records != 3 || p.Unattested != 0 {
			t.Fatalf("flat-3's payword total %+v; want 300 proven of 300 claimed over 3 records, all attested", p)
		}
		if p := rep.Paywords[1]; p.Account != "flat-4" || p.Quantity != 0 || p.Claimed != 40 {
			t.Fatalf("flat-4's payword total %+v; want 40 claimed, none proven", p)
		}
		if c := claims(1)[0]; c.Account != "flat-4" || c.Claimed != 40 || c.Proven != 0 {
			t.Fatalf("flat-4's unproven claim %+v", c)
		}
		if rep.Stats.UnprovenPaywords != 4 || rep.Stats.Paywords != 3 {
			t.Fatalf("stats %+v", rep.Stats)
		}
		for s, gaps := range rep.Gaps {
			if len(gaps) != 0 {
				t.Fatalf("stream %s: gaps %v", s, gaps)
			}
		}
		// Without the device's key the same usage is proven, but unattested.
		r.Close()
		r2, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		mustBook(t, r2, ps.aggregate(11, "flat-3", 40, 40), provider.Accepted)
		if bk := mustBook(t, r2, ps.progress(12, 11, 150, 170), provider.Accepted); bk.Payword.Attested {
			t.Fatal("a commitment checked with no device key counted as attested")
		}
		if rep, _ := r2.Report(); rep.Stats.UnattestedPaywords != 1 {
			t.Fatalf("stats %+v", rep.Stats)
		}
		// A record that comes before its aggregate, of another account than
		// the aggregate's: the claim is flagged, never reconciled.
		mustBook(t, r2, ps.progress(15, 14, 170, 180), provider.Accepted)
		mustBook(t, r2, ps.aggregate(14, "flat-4", 20, 20), provider.Accepted)
		rep, err = r2.Report()
		if err != nil {
			t.Fatal(err)
		}
		var foreign []provider.PaywordClaim
		for _, c := range rep.PaywordClaims {
			if c.Foreign {
				foreign = append(foreign, c)
			}
		}
		if len(foreign) != 1 || !strings.HasSuffix(foreign[0].Stream, "/14") || foreign[0].Proven != 20 || foreign[0].Claimed != 20 || foreign[0].Reconciled() {
			t.Fatalf("claims %+v; want aggregate 14's flagged", rep.PaywordClaims)
		}
	})
}

func mustSigner(t *testing.T) protocol.Signer {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := protocol.NewEd25519Signer(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A device keys file is a line "DEVICE-ID HEX-KEY" per device; anything
// else is refused with its line.
func TestReadDeviceKeys(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	h := hex.EncodeToString(pub)
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		text string
		want string // "" for no error
	}{
		"good":         {"# payword devices\n\nplug-1 " + h + "\n  plug-2   " + h + "  \n", ""},
		"short key":    {"plug-1 " + h[:60] + "\n", ":1:"},
		"no key":       {"plug-1\n", ":1:"},
		"listed twice": {"plug-1 " + h + "\nplug-1 " + h + "\n", ":2: device plug-1 listed twice"},
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(f, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		keys, err := provider.ReadDeviceKeys(f)
		switch {
		case tc.want == "" && (err != nil || len(keys) != 2 || !keys["plug-2"].Equal(pub)):
			t.Errorf("%s: %v, %v", name, keys, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v; want an error with %q", name, err, tc.want)
		}
	}
}

// After a gap (paywords held at the gateway), a record is checked
// against the chain's last proven payword: a genuine one passes, one
// whose paywords agree with each other but not with the chain is held.
func TestPaywordGapCheckedAgainstTheLastProven(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		g := newGW(t)
		r, err := open(provider.Keys(g.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ps := newPaywordStream(t, g, mustSigner(t))
		mustBook(t, r, ps.progress(1, 0, 0, 100), provider.Accepted)
		forged := protocol.ChainProgress{Gateway: "gw-1", Seq: 2, Provider: "water", Account: "flat-3", Commitment: ps.cb,
			From: 150, To: 200, ToWord: protocol.Payword{0xf0}, Epoch: 7}
		forged.FromWord = protocol.PaywordWalk(&ps.id, forged.ToWord, 50)
		var enc protocol.Encoder
		b, err := enc.AppendChainProgress(nil, &forged, g.s)
		if err != nil {
			t.Fatal(err)
		}
		if bk := mustBook(t, r, b, provider.PaywordUnproven); !strings.Contains(bk.Unproven, "proven before") {
			t.Errorf("a forged record after a gap: %q", bk.Unproven)
		}
		mustBook(t, r, ps.progress(3, 0, 150, 200), provider.Accepted)
	})
}
