// Package receiver is the provider's side of Farthing: it takes aggregates
// from gateways (MQTT, a JetStream durable consumer, or HTTP), checks each
// against the gateway keys it trusts, keeps each (gateway, seq) once,
// reports gaps in a gateway's seqs, and keeps per-provider, per-account
// totals in its own bbolt file. It is `farthing receive`.
package receiver

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

var (
	bucketSeen   = []byte("seen")   // gateway 0 seq(8) → aggregate bytes
	bucketHigh   = []byte("high")   // gateway → highest seq seen (8)
	bucketTotals = []byte("totals") // provider 0 account 0 currency → totals record
)

// Errors a refused aggregate gets.
var (
	ErrUntrusted = errors.New("receiver: aggregate from a gateway key not trusted")
	ErrInvalid   = errors.New("receiver: invalid aggregate")
)

// Outcome of one aggregate.
type Outcome int

// Outcomes.
const (
	Accepted Outcome = iota
	Duplicate
)

// Receiver keeps the books of received aggregates.
type Receiver struct {
	db    *bolt.DB
	trust map[string]*strict.Ed25519Verifier // by kid

	mu    sync.Mutex // guards stats
	stats Stats
}

// Stats count what came in.
type Stats struct {
	Accepted, Duplicates, Refused uint64
}

// Open opens (or creates) the receiver's file and trusts these gateway
// public keys.
func Open(path string, trusted []ed25519.PublicKey) (*Receiver, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSeen, bucketHigh, bucketTotals} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	r := &Receiver{db: db, trust: map[string]*strict.Ed25519Verifier{}}
	for _, k := range trusted {
		v, err := strict.NewEd25519Verifier(k)
		if err != nil {
			db.Close()
			return nil, err
		}
		r.trust[string(v.KeyID())] = v
	}
	return r, nil
}

// Close closes the file.
func (r *Receiver) Close() error { return r.db.Close() }

// Accept checks and books one aggregate. It is durable when it returns
// (bbolt commits with fsync), so a transport may acknowledge then.
func (r *Receiver) Accept(b []byte) (Outcome, *protocol.Aggregate, error) {
	env, a, err := strict.DecodeAggregate(b)
	if err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return 0, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v := r.trust[string(env.KeyID)]
	if v == nil {
		r.count(func(s *Stats) { s.Refused++ })
		return 0, nil, fmt.Errorf("%w: kid %x (gateway %s)", ErrUntrusted, env.KeyID, a.Gateway)
	}
	if err := env.Verify(v, nil); err != nil {
		r.count(func(s *Stats) { s.Refused++ })
		return 0, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	out := Accepted
	err = r.db.Update(func(tx *bolt.Tx) error {
		key := binary.BigEndian.AppendUint64(append([]byte(a.Gateway), 0), a.Seq)
		seen := tx.Bucket(bucketSeen)
		if seen.Get(key) != nil {
			out = Duplicate
			return nil
		}
		if err := seen.Put(key, b); err != nil {
			return err
		}
		hb := tx.Bucket(bucketHigh)
		if h := hb.Get([]byte(a.Gateway)); h == nil || binary.BigEndian.Uint64(h) < a.Seq {
			if err := hb.Put([]byte(a.Gateway), binary.BigEndian.AppendUint64(nil, a.Seq)); err != nil {
				return err
			}
		}
		tb := tx.Bucket(bucketTotals)
		tk := []byte(a.Provider + "\x00" + a.Account + "\x00" + a.Currency)
		t := decodeTotal(tb.Get(tk))
		t.Amount += a.Amount
		t.Quantity += a.Quantity
		t.Tickets += a.Tickets
		t.Aggregates++
		return tb.Put(tk, t.encode())
	})
	if err != nil {
		return 0, nil, fmt.Errorf("receiver: store: %w", err)
	}
	r.count(func(s *Stats) {
		if out == Duplicate {
			s.Duplicates++
		} else {
			s.Accepted++
		}
	})
	return out, &a, nil
}

func (r *Receiver) count(f func(*Stats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

// Stats returns the counters since Open.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Total is what one account owes one provider in one currency.
type Total struct {
	Provider   string `json:"provider"`
	Account    string `json:"account"`
	Currency   string `json:"currency"`
	Amount     uint64 `json:"amount_nanos"`
	Quantity   uint64 `json:"quantity"`
	Tickets    uint64 `json:"tickets"`
	Aggregates uint64 `json:"aggregates"`
}

func (t Total) encode() []byte {
	b := make([]byte, 0, 32)
	for _, v := range []uint64{t.Amount, t.Quantity, t.Tickets, t.Aggregates} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeTotal(b []byte) Total {
	var t Total
	if len(b) == 32 {
		t.Amount, t.Quantity = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
		t.Tickets, t.Aggregates = binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:])
	}
	return t
}

// Report is the receiver's view: totals and, per gateway, the seqs missing
// below the highest seen.
type Report struct {
	Totals []Total             `json:"totals"`
	Gaps   map[string][]uint64 `json:"gaps"`
	High   map[string]uint64   `json:"highest_seq"`
	Stats  Stats               `json:"stats"`
}

// Report reads the totals and finds the gaps.
func (r *Receiver) Report() (*Report, error) {
	rep := &Report{Gaps: map[string][]uint64{}, High: map[string]uint64{}, Stats: r.Stats()}
	err := r.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
			var p [3]string
			start, n := 0, 0
			for i, c := range k {
				if c == 0 && n < 2 {
					p[n], start, n = string(k[start:i]), i+1, n+1
				}
			}
			p[2] = string(k[start:])
			t := decodeTotal(v)
			t.Provider, t.Account, t.Currency = p[0], p[1], p[2]
			rep.Totals = append(rep.Totals, t)
			return nil
		})
		seen := tx.Bucket(bucketSeen)
		return tx.Bucket(bucketHigh).ForEach(func(gw, h []byte) error {
			high := binary.BigEndian.Uint64(h)
			rep.High[string(gw)] = high
			c := seen.Cursor()
			prefix := append(append([]byte(nil), gw...), 0)
			want := uint64(1)
			for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
				seq := binary.BigEndian.Uint64(k[len(prefix):])
				for ; want < seq && len(rep.Gaps[string(gw)]) < 1000; want++ {
					rep.Gaps[string(gw)] = append(rep.Gaps[string(gw)], want)
				}
				want = seq + 1
			}
			return nil
		})
	})
	sort.Slice(rep.Totals, func(i, j int) bool {
		a, b := rep.Totals[i], rep.Totals[j]
		return a.Provider+"\x00"+a.Account < b.Provider+"\x00"+b.Account
	})
	return rep, err
}
