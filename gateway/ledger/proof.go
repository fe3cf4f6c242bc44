package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/metering"
)

// ErrNoProof: the ticket is unknown, pruned, or its window is not sealed yet.
var ErrNoProof = errors.New("ledger: no inclusion proof")

// Proof shows that one ticket is leaf Index of the Merkle tree whose root
// aggregate Aggregate carries (RFC 9162 audit path). A provider checks it
// with the ticket's bytes alone: SHA-256 of the bytes is TicketHash.
type Proof struct {
	Ticket     string   `json:"ticket"` // device/seq
	TicketHash string   `json:"ticket_hash"`
	Aggregate  uint64   `json:"aggregate_seq"`
	Provider   string   `json:"provider"`
	Account    string   `json:"account"`
	Meter      string   `json:"meter"`
	Index      uint64   `json:"index"`
	Tickets    uint64   `json:"tickets"`
	Root       string   `json:"merkle_root"`
	Path       []string `json:"audit_path"`
}

// TicketProofs returns one proof per aggregate the ticket is in (one per
// counted reading), each checked against the stored root before it is
// returned.
func (bk *Books) TicketProofs(device string, seq uint64) ([]Proof, error) {
	st := bk.st
	if err := CheckSchema(st); err != nil {
		return nil, err
	}
	var out []Proof
	err := st.View(func(tx *bolt.Tx) error {
		rec, err := decodeTicketRecord(tx.Bucket(bucketTickets).Get(seqKey(seq, device)))
		idx := rec.Leaves
		if err != nil || len(idx) == 0 || rec.Raw == nil {
			return fmt.Errorf("%w: ticket %s/%d is not stored (unknown, a baseline reading, or pruned)", ErrNoProof, device, seq)
		}
		for len(idx) > 0 {
			n, w := binary.Uvarint(idx)
			if w <= 0 || uint64(len(idx)-w) < n {
				return fmt.Errorf("%w: bad leaf index", ErrNoProof)
			}
			leafKey := idx[w : w+int(n)]
			idx = idx[w+int(n):]
			p, err := proofOf(tx, leafKey)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

func proofOf(tx *bolt.Tx, leafKey []byte) (Proof, error) {
	var p Proof
	if len(leafKey) < 16 {
		return p, fmt.Errorf("%w: bad leaf key", ErrNoProof)
	}
	prefix, index := leafKey[:len(leafKey)-8], binary.BigEndian.Uint64(leafKey[len(leafKey)-8:])
	var aggSeq uint64
	if bytes.HasPrefix(leafKey, []byte("c\x00")) {
		aggSeq = binary.BigEndian.Uint64(prefix[2:])
	} else {
		aggSeq = getU64(tx.Bucket(bucketSealedBy).Get(prefix))
		if aggSeq == 0 {
			return p, fmt.Errorf("%w: the ticket's window is still open", ErrNoProof)
		}
	}
	rec, err := decodeSealedRecord(tx.Bucket(bucketSealed).Get(putU64(aggSeq)))
	if err != nil {
		return p, err
	}
	var leaves []metering.Hash
	var ticket metering.Hash
	c := tx.Bucket(bucketLeaves).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
		var h metering.Hash
		copy(h[:], v)
		if binary.BigEndian.Uint64(k[len(prefix):]) == index {
			ticket = h
			p.Ticket = string(v[len(h):])
		}
		leaves = append(leaves, h)
	}
	if uint64(len(leaves)) != rec.Tickets || index >= uint64(len(leaves)) {
		return p, fmt.Errorf("%w: aggregate %d has %d tickets, %d leaves are stored", ErrNoProof, aggSeq, rec.Tickets, len(leaves))
	}
	path, err := metering.InclusionProof(leaves, int(index))
	if err != nil {
		return p, err
	}
	if err := metering.VerifyInclusion(rec.Root, ticket, index, uint64(len(leaves)), path); err != nil {
		return p, fmt.Errorf("stored leaves do not match aggregate %d's root: %w", aggSeq, err)
	}
	p.TicketHash, p.Aggregate, p.Index, p.Tickets = hex.EncodeToString(ticket[:]), aggSeq, index, uint64(len(leaves))
	p.Provider, p.Account, p.Meter, p.Root = rec.Provider, rec.Account, rec.Meter, hex.EncodeToString(rec.Root[:])
	for _, h := range path {
		p.Path = append(p.Path, hex.EncodeToString(h[:]))
	}
	return p, nil
}

// StoredTicket returns what the state file keeps of an accepted ticket:
// its charge, and its bytes unless they were pruned. ok is false for a
// ticket that was never accepted.
func (bk *Books) StoredTicket(device string, seq uint64) (charged uint64, raw []byte, ok bool) {
	st := bk.st
	st.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTickets).Get(seqKey(seq, device))
		if v == nil {
			return nil
		}
		r, err := decodeTicketRecord(v)
		if err != nil {
			return nil
		}
		charged, raw, ok = r.Charged, append([]byte(nil), r.Raw...), true
		if len(raw) == 0 {
			raw = nil
		}
		return nil
	})
	return charged, raw, ok
}
