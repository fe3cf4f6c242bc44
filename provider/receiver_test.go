package provider_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

type gw struct {
	pub ed25519.PublicKey
	s   *protocol.Ed25519Signer
}

func newGW(t *testing.T) gw {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, err := protocol.NewEd25519Signer(priv)
	if err != nil {
		t.Fatal(err)
	}
	return gw{pub, s}
}

// agg signs an aggregate of amount in stream epoch with seq for gateway id.
func (g gw) agg(t *testing.T, id string, epoch, seq, amount uint64) []byte {
	t.Helper()
	a := protocol.Aggregate{Gateway: id, Seq: seq, Epoch: epoch, Provider: "p", Account: "a", Meter: "m",
		WindowStart: 1, WindowEnd: 2, Quantity: amount / 10, Amount: amount, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &a, g.s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func total(t *testing.T, r *provider.Receiver) (amount, aggs uint64, rep *provider.Report) {
	t.Helper()
	rep, err := r.Report()
	if err != nil {
		t.Fatal(err)
	}
	for _, tot := range rep.Totals {
		amount += tot.Amount
		aggs += tot.Aggregates
	}
	return amount, aggs, rep
}

// opener opens (or opens again) one store's books.
type opener func(trust []provider.Trust) (*provider.Receiver, error)

// stores runs f with the embedded file and with PostgreSQL: the same
// properties hold for both books.
func stores(t *testing.T, f func(t *testing.T, open opener)) {
	t.Run("bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "r.db")
		f(t, func(trust []provider.Trust) (*provider.Receiver, error) { return provider.Open(path, trust) })
	})
	t.Run("postgres", func(t *testing.T) {
		url, err := cluster.NewDatabase(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var opened []*provider.Receiver
		t.Cleanup(func() {
			for _, r := range opened {
				r.Close()
			}
		})
		f(t, func(trust []provider.Trust) (*provider.Receiver, error) {
			r, err := pgbooks.Open(context.Background(), url, trust, pgbooks.Options{})
			if err == nil {
				opened = append(opened, r)
			}
			return r, err
		})
	})
}

func mustBook(t *testing.T, r *provider.Receiver, b []byte, want provider.Outcome) provider.Booking {
	t.Helper()
	bk, err := r.Accept(context.Background(), b)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if bk.Outcome != want {
		t.Fatalf("Accept outcome = %d; want %d", bk.Outcome, want)
	}
	return bk
}

// Two gateways that share a gateway id (say both left at an old default
// "gw-raspberrypi") send seqs 1..n each: every aggregate of both is booked.
func TestTwoGatewaysOneIDBothBooked(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a, b := newGW(t), newGW(t)
		r, err := open(provider.Keys(a.pub, b.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for seq := uint64(1); seq <= 5; seq++ {
			mustBook(t, r, a.agg(t, "gw-raspberrypi", 7, seq, 1000), provider.Accepted)
			mustBook(t, r, b.agg(t, "gw-raspberrypi", 9, seq, 10), provider.Accepted)
		}
		mustBook(t, r, a.agg(t, "gw-raspberrypi", 7, 3, 1000), provider.Duplicate)
		amount, aggs, rep := total(t, r)
		if amount != 5*1000+5*10 || aggs != 10 || len(rep.Streams) != 2 {
			t.Fatalf("booked %d nanos in %d aggregates, %d streams; want 5050 in 10, 2 streams", amount, aggs, len(rep.Streams))
		}
		if st := rep.Stats; st.Accepted != 10 || st.Duplicates != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A gateway whose state file was lost starts a new epoch at seq 1: booked,
// and reported as a reset with the old epoch's last seq.
func TestStreamResetBookedAndReported(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a := newGW(t)
		r, err := open(provider.Keys(a.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for seq := uint64(1); seq <= 4; seq++ {
			if bk := mustBook(t, r, a.agg(t, "gw-a", 100, seq, 5), provider.Accepted); bk.ResetFrom != nil {
				t.Fatalf("seq %d: reset %+v in the first epoch", seq, bk.ResetFrom)
			}
		}
		bk := mustBook(t, r, a.agg(t, "gw-a", 200, 1, 7), provider.Accepted)
		if bk.ResetFrom == nil || bk.ResetFrom.Epoch != 100 || bk.ResetFrom.LastSeq != 4 {
			t.Fatalf("new epoch: ResetFrom = %+v; want epoch 100, last seq 4", bk.ResetFrom)
		}
		mustBook(t, r, a.agg(t, "gw-a", 200, 2, 7), provider.Accepted)
		amount, _, rep := total(t, r)
		if amount != 4*5+2*7 {
			t.Fatalf("booked %d; want %d", amount, 4*5+2*7)
		}
		resets := 0
		for _, s := range rep.Streams {
			if s.ResetFrom != nil {
				resets++
				if s.Epoch != 200 || s.ResetFrom.LastSeq != 4 {
					t.Fatalf("reset stream %+v", s)
				}
			}
		}
		if resets != 1 || rep.Stats.Resets != 1 {
			t.Fatalf("%d resets in the report, %d counted; want 1", resets, rep.Stats.Resets)
		}
	})
}

// The same (key, epoch, seq) with other bytes is a conflict: refused,
// held, counted, reported, never booked and never called a duplicate.
func TestConflictHeldNotBooked(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a := newGW(t)
		r, err := open(provider.Keys(a.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mustBook(t, r, a.agg(t, "gw-a", 1, 1, 500), provider.Accepted)
		other := a.agg(t, "gw-a", 1, 1, 777)
		for range 2 {
			if _, err := r.Accept(context.Background(), other); !errors.Is(err, provider.ErrConflict) || !provider.Refused(err) {
				t.Fatalf("conflicting aggregate: err = %v; want ErrConflict", err)
			}
		}
		amount, aggs, rep := total(t, r)
		if amount != 500 || aggs != 1 {
			t.Fatalf("booked %d in %d; want 500 in 1", amount, aggs)
		}
		if len(rep.Held) != 1 || rep.Held[0].Reason != "conflict" || rep.Held[0].Amount != 777 || rep.Held[0].Seq != 1 {
			t.Fatalf("held = %+v; want the 777 aggregate, once, as a conflict", rep.Held)
		}
		if rep.Stats.Conflicts != 2 || rep.Stats.Duplicates != 0 {
			t.Fatalf("stats %+v: want 2 conflicts, 0 duplicates", rep.Stats)
		}
	})
}

// A key speaks for one gateway id: the configured one, or the first seen.
func TestKeyBoundToOneGatewayID(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a, b := newGW(t), newGW(t)
		r, err := open([]provider.Trust{{Key: a.pub, Gateway: "site-1"}, {Key: b.pub}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Accept(context.Background(), a.agg(t, "site-2", 1, 1, 5)); !errors.Is(err, provider.ErrWrongGateway) {
			t.Fatalf("configured binding: err = %v; want ErrWrongGateway", err)
		}
		mustBook(t, r, a.agg(t, "site-1", 1, 1, 5), provider.Accepted)
		mustBook(t, r, b.agg(t, "site-9", 1, 1, 3), provider.Accepted) // bound now
		if _, err := r.Accept(context.Background(), b.agg(t, "site-1", 1, 2, 3)); !errors.Is(err, provider.ErrWrongGateway) {
			t.Fatalf("binding on first use: err = %v; want ErrWrongGateway", err)
		}
		amount, _, rep := total(t, r)
		if amount != 8 || len(rep.Held) != 2 || rep.Stats.WrongGateway != 2 {
			t.Fatalf("booked %d, held %d, counted %d; want 8, 2, 2", amount, len(rep.Held), rep.Stats.WrongGateway)
		}
		r.Close()
		// The binding made on first use is in the file: reopening with another
		// configured id for that key is refused.
		if _, err := open([]provider.Trust{{Key: b.pub, Gateway: "site-1"}}); err == nil {
			t.Fatal("reopened with a binding that contradicts the file")
		}
	})
}

// An aggregate from before stream epochs (no key 14) is epoch 0, and a
// receiver file from before streams is carried over with its totals.
func TestLegacyAggregatesAndFile(t *testing.T) {
	a := newGW(t)
	path := filepath.Join(t.TempDir(), "r.db")
	old := a.agg(t, "gw-old", 0, 1, 40)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		seen, _ := tx.CreateBucket([]byte("seen"))
		seen.Put(binary.BigEndian.AppendUint64([]byte("gw-old\x00"), 1), old)
		high, _ := tx.CreateBucket([]byte("high"))
		high.Put([]byte("gw-old"), binary.BigEndian.AppendUint64(nil, 1))
		tot, _ := tx.CreateBucket([]byte("totals"))
		var v []byte
		for _, x := range []uint64{40, 4, 1, 1} {
			v = binary.BigEndian.AppendUint64(v, x)
		}
		return tot.Put([]byte("p\x00a\x00EUR"), v)
	})
	db.Close()
	r, err := provider.Open(path, provider.Keys(a.pub))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustBook(t, r, old, provider.Duplicate)
	mustBook(t, r, a.agg(t, "gw-old", 0, 2, 2), provider.Accepted)
	amount, aggs, rep := total(t, r)
	if amount != 42 || aggs != 2 || len(rep.Streams) != 1 || rep.Streams[0].Epoch != 0 || rep.Streams[0].High != 2 {
		t.Fatalf("booked %d in %d, streams %+v", amount, aggs, rep.Streams)
	}
}

// Gaps are per stream, counted below its highest seq.
func TestGapsPerStream(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a := newGW(t)
		r, err := open(provider.Keys(a.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, seq := range []uint64{1, 2, 5, 7} {
			mustBook(t, r, a.agg(t, "gw-a", 3, seq, 1), provider.Accepted)
		}
		_, _, rep := total(t, r)
		s := rep.Streams[0]
		if s.Missing != 3 || len(s.Gaps) != 3 || s.Gaps[0] != 3 || s.Gaps[1] != 4 || s.Gaps[2] != 6 {
			t.Fatalf("stream %+v: want gaps 3 4 6", s)
		}
	})
}

func (g gw) credit(t *testing.T, id string, epoch, seq uint64, kind, ref string, amount uint64) []byte {
	t.Helper()
	c := protocol.Credit{Gateway: id, Seq: seq, Epoch: epoch, Account: "kiosk", Amount: amount, Currency: "EUR",
		Time: 1_790_000_000_000, Kind: kind, Ref: ref}
	var enc protocol.Encoder
	b, err := enc.AppendCredit(nil, &c, g.s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Credit records share their stream's seqs with the aggregates (no gaps),
// add to the credit totals, and a voucher credited by two gateways is
// booked (the gateways granted it) and flagged.
func TestCreditsAndDoubleRedemption(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a, b := newGW(t), newGW(t)
		r, err := open(provider.Keys(a.pub, b.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		mustBook(t, r, a.agg(t, "gw-a", 1, 1, 100), provider.Accepted)
		mustBook(t, r, a.credit(t, "gw-a", 1, 2, protocol.CreditTopUp, "pay-1", 5_000), provider.Accepted)
		bk := mustBook(t, r, a.credit(t, "gw-a", 1, 3, protocol.CreditVoucher, "V-1", 2_000), provider.Accepted)
		if bk.DoubleRedemption != "" || bk.Credit == nil {
			t.Fatalf("first redemption: %+v", bk)
		}
		mustBook(t, r, a.agg(t, "gw-a", 1, 4, 100), provider.Accepted)
		mustBook(t, r, a.credit(t, "gw-a", 1, 3, protocol.CreditVoucher, "V-1", 2_000), provider.Duplicate)
		bk = mustBook(t, r, b.credit(t, "gw-b", 9, 1, protocol.CreditVoucher, "V-1", 2_000), provider.Accepted)
		if bk.DoubleRedemption == "" {
			t.Fatal("a voucher credited at a second gateway was not flagged")
		}
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range rep.Streams {
			if s.Missing != 0 {
				t.Errorf("stream %s misses %d: credits must fill the seqs", s.Stream, s.Missing)
			}
		}
		var voucher, topUp uint64
		for _, c := range rep.Credits {
			switch c.Kind {
			case protocol.CreditVoucher:
				voucher += c.Amount
			case protocol.CreditTopUp:
				topUp += c.Amount
			}
		}
		if voucher != 4_000 || topUp != 5_000 || len(rep.Doubles) != 1 || rep.Doubles[0].Voucher != "V-1" || rep.Stats.DoubleRedemptions != 1 {
			t.Fatalf("credits %+v, doubles %+v, stats %+v", rep.Credits, rep.Doubles, rep.Stats)
		}
		// The flag offers the command that settles it.
		if want := "farthing fleet push adjust --gateway gw-b --account kiosk --amount -0.000002 --currency EUR --reason double_redemption --voucher V-1 --ref double-V-1"; rep.Doubles[0].Fix != want {
			t.Errorf("fix: %q; want %q", rep.Doubles[0].Fix, want)
		}
		amount, _, _ := total(t, r)
		if amount != 200 {
			t.Fatalf("aggregate totals %d; credits must not count as usage", amount)
		}
	})
}

// Two receivers on one database book the same records at once, each many
// times over: every record is booked exactly once, and the totals are
// exact.
func TestPostgresExactlyOnceAcrossReceivers(t *testing.T) {
	a := newGW(t)
	url, err := cluster.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rs []*provider.Receiver
	for range 2 {
		r, err := pgbooks.Open(context.Background(), url, provider.Keys(a.pub), pgbooks.Options{MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rs = append(rs, r)
	}
	const n = 200
	recs := make([][]byte, n)
	var want uint64
	for i := range recs {
		recs[i] = a.agg(t, "gw-a", 9, uint64(i+1), uint64(1000+i))
		want += uint64(1000 + i)
	}
	var wg sync.WaitGroup
	var accepted, dups atomic.Int64
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rs[w%2]
			for i := range recs {
				bk, err := r.Accept(context.Background(), recs[(i+w*37)%n])
				if err != nil {
					t.Error(err)
					return
				}
				if bk.Outcome == provider.Duplicate {
					dups.Add(1)
				} else {
					accepted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	amount, aggs, rep := total(t, rs[0])
	if accepted.Load() != n || dups.Load() != 5*n || amount != want || aggs != n || rep.Streams[0].Missing != 0 {
		t.Fatalf("accepted %d, duplicates %d, booked %d in %d aggregates; want %d, %d, %d in %d", accepted.Load(), dups.Load(),
			amount, aggs, n, 5*n, want, n)
	}
}

// A database whose schema is newer than this build is refused.
func TestPostgresNewerSchemaRefused(t *testing.T) {
	url, err := cluster.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r, err := pgbooks.Open(context.Background(), url, nil, pgbooks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	conn.Exec(context.Background(), "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')", pgbooks.SchemaVersion()+1)
	conn.Close(context.Background())
	if _, err := pgbooks.Open(context.Background(), url, nil, pgbooks.Options{}); !errors.Is(err, pgbooks.ErrSchemaNewer) {
		t.Fatalf("a newer schema: %v; want ErrSchemaNewer", err)
	}
}
