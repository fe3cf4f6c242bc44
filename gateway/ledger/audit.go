package ledger

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// AuditBundle is what an audit sink keeps of one aggregate so that any of
// its tickets can be proved without the gateway: the signed aggregate and
// every leaf of its Merkle tree, in order, with the ticket's bytes.
type AuditBundle struct {
	Stream    string      `json:"stream"` // protocol.StreamID.String()
	Seq       uint64      `json:"seq"`
	Aggregate string      `json:"aggregate"` // the signed aggregate, hex
	Leaves    []AuditLeaf `json:"leaves"`
}

// AuditLeaf is one ticket of an aggregate.
type AuditLeaf struct {
	Ticket string `json:"ticket"` // device/seq
	Hash   string `json:"hash"`   // SHA-256 of the ticket's bytes: the Merkle leaf
	Raw    string `json:"raw,omitempty"`
	// Grant is the grant the ticket's usage was under (its key 8), whose
	// reservation paid its charge first; 0 or absent: none. It is in Raw
	// too, signed by the device.
	Grant uint64 `json:"grant,omitempty"`
	// Tariff is the tariff version in force at the ticket's time, which
	// priced it (the aggregate names it too, unless a correction of late
	// usage was priced by several); absent without versions.
	Tariff string `json:"tariff_version,omitempty"`
}

// AuditBundles returns the bundles of the aggregates after the last one
// the audit sink took, at most max of them, and the seq they reach (credit
// and hold records in between have no bundle but are passed over). The
// aggregate's bytes come from the outbox or, once it was confirmed, are
// signed again.
func (bk *Books) AuditBundles(t *Terms, max int) ([]AuditBundle, uint64, error) {
	var out []AuditBundle
	var through uint64
	err := bk.st.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		through = getU64(meta.Get(metaAuditShipped))
		last := getU64(meta.Get(metaAggSeq))
		for through < last && len(out) < max {
			key := putU64(through + 1)
			if tx.Bucket(bucketRecords).Get(key) != nil {
				through++
				continue
			}
			rec, err := decodeSealedRecord(tx.Bucket(bucketSealed).Get(key))
			if err != nil {
				return fmt.Errorf("audit bundle %d: %w", through+1, err)
			}
			through++
			b := AuditBundle{Stream: bk.cfg.Stream.String(), Seq: bk.wire(through)}
			if v := tx.Bucket(bucketOutbox).Get(key); v != nil {
				// Not confirmed yet: the bytes sent are still in the outbox.
				b.Aggregate = hex.EncodeToString(v)
				if s, _, ok := recordStream(v); ok {
					b.Stream = s.String()
				}
			} else if bk.cfg.Signer != nil {
				// Signed again: Ed25519 signatures are deterministic, so
				// the bytes are those sent — in the epoch the aggregate
				// had, which is the one before the last restore for those
				// sealed before it.
				epoch := bk.cfg.Stream.Epoch
				if through <= bk.cfg.SeqBase {
					epoch = counters(meta, metaRestored, 2)[1]
					if s, ok := protocol.StreamOf(bk.cfg.Stream.KeyID[:], epoch); ok {
						b.Stream = s.String()
					}
				}
				agg := rec.Aggregate(terms(t).GatewayID, bk.wire(through))
				agg.Epoch = epoch
				var enc protocol.Encoder
				ab, err := enc.AppendAggregate(nil, &agg, bk.cfg.Signer)
				if err != nil {
					return fmt.Errorf("audit bundle %d: %w", through, err)
				}
				b.Aggregate = hex.EncodeToString(ab)
			}
			prefix := rec.leafPrefix(through)
			c := tx.Bucket(bucketLeaves).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
				l := AuditLeaf{Ticket: string(v[32:]), Hash: hex.EncodeToString(v[:32])}
				if tk := ticketKey(v[32:]); tk != nil {
					if r, err := decodeTicketRecord(tx.Bucket(bucketTickets).Get(tk)); err == nil && r.Raw != nil {
						l.Raw = hex.EncodeToString(r.Raw)
						if _, t, err := strict.DecodeTicket(r.Raw); err == nil {
							l.Grant = t.Grant
							if _, v, err := bk.tariffsAt(tx, nil, int64(t.Time)); err == nil {
								l.Tariff = v
							}
						}
					}
				}
				b.Leaves = append(b.Leaves, l)
			}
			out = append(out, b)
		}
		return nil
	})
	return out, through, err
}

// AuditShipped records that the audit sink took every bundle up to seq.
func (bk *Books) AuditShipped(ctx context.Context, seq uint64) error {
	return bk.st.Do(ctx, func(stx *store.Tx) error {
		if seq <= getU64(stx.Bolt().Bucket(bucketMeta).Get(metaAuditShipped)) {
			return nil
		}
		return stx.Put(bucketMeta, metaAuditShipped, putU64(seq))
	})
}

// ProveFromBundle proves ticket (device/seq) from an audit bundle, as
// TicketProofs does from the state file; ok is false when the ticket is
// not in the bundle. The bundle's leaves are checked against the
// aggregate's Merkle root (and each raw ticket against its leaf).
func ProveFromBundle(b AuditBundle, agg protocol.Aggregate, ticket string) (Proof, bool, error) {
	var p Proof
	leaves := make([]metering.Hash, len(b.Leaves))
	index := -1
	for i, l := range b.Leaves {
		h, err := hex.DecodeString(l.Hash)
		if err != nil || len(h) != len(leaves[i]) {
			return p, false, fmt.Errorf("%w: bundle %d: bad leaf hash", ErrNoProof, b.Seq)
		}
		copy(leaves[i][:], h)
		if l.Raw != "" {
			raw, err := hex.DecodeString(l.Raw)
			if err != nil || metering.TicketHash(raw) != leaves[i] {
				return p, false, fmt.Errorf("%w: bundle %d: ticket %s does not hash to its leaf", ErrNoProof, b.Seq, l.Ticket)
			}
		}
		if l.Ticket == ticket {
			index = i
		}
	}
	if index < 0 {
		return p, false, nil
	}
	var root metering.Hash
	copy(root[:], agg.MerkleRoot)
	if uint64(len(leaves)) != agg.Tickets {
		return p, true, fmt.Errorf("%w: aggregate %d has %d tickets, the bundle %d leaves", ErrNoProof, b.Seq, agg.Tickets, len(leaves))
	}
	path, err := metering.InclusionProof(leaves, index)
	if err != nil {
		return p, true, err
	}
	if err := metering.VerifyInclusion(root, leaves[index], uint64(index), uint64(len(leaves)), path); err != nil {
		return p, true, fmt.Errorf("bundle %d does not match its aggregate's root: %w", b.Seq, err)
	}
	p = Proof{Ticket: ticket, TicketHash: hex.EncodeToString(leaves[index][:]), Aggregate: agg.Seq, Provider: agg.Provider,
		Account: agg.Account, Meter: agg.Meter, Index: uint64(index), Tickets: uint64(len(leaves)), Root: hex.EncodeToString(root[:])}
	for _, h := range path {
		p.Path = append(p.Path, hex.EncodeToString(h[:]))
	}
	return p, true, nil
}
