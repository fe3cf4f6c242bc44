package metering

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
)

// The Merkle tree over the tickets of a sealed window is the Merkle Tree
// Hash of RFC 9162 section 2.1.1 (as in Certificate Transparency):
//
//	leaf  = SHA-256(0x00 || SHA-256(ticket bytes))
//	node  = SHA-256(0x01 || left || right)
//	MTH({}) = SHA-256("")
//	MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//
// Leaves are in the order the tickets were added to the window, which is
// the order the gateway committed them. A provider holding a ticket, its
// index, the window's ticket count and an inclusion proof can check that
// the ticket is in the sealed total without trusting the gateway.

// Hash is a SHA-256 digest.
type Hash = [sha256.Size]byte

// TicketHash is the hash of a ticket's bytes as received.
func TicketHash(ticket []byte) Hash { return sha256.Sum256(ticket) }

func leafHash(ticket Hash) Hash {
	var b [1 + sha256.Size]byte
	b[0] = 0
	copy(b[1:], ticket[:])
	return sha256.Sum256(b[:])
}

func nodeHash(l, r Hash) Hash {
	var b [1 + 2*sha256.Size]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[1+sha256.Size:], r[:])
	return sha256.Sum256(b[:])
}

// Frontier computes a Merkle root incrementally: it keeps the roots of the
// perfect subtrees that make up the first N leaves (one per set bit of N,
// largest first), so a window's state stays O(log N) however many tickets
// it holds.
type Frontier struct {
	N     uint64
	Peaks []Hash
}

// Add appends the leaf for a ticket hash.
func (f *Frontier) Add(ticket Hash) {
	h := leafHash(ticket)
	for n := f.N; n&1 == 1; n >>= 1 {
		h = nodeHash(f.Peaks[len(f.Peaks)-1], h)
		f.Peaks = f.Peaks[:len(f.Peaks)-1]
	}
	f.Peaks = append(f.Peaks, h)
	f.N++
}

// Root returns the Merkle Tree Hash of the leaves added so far.
func (f *Frontier) Root() Hash {
	if f.N == 0 {
		return sha256.Sum256(nil)
	}
	r := f.Peaks[len(f.Peaks)-1]
	for i := len(f.Peaks) - 2; i >= 0; i-- {
		r = nodeHash(f.Peaks[i], r)
	}
	return r
}

// valid reports whether Peaks matches N (one peak per set bit).
func (f *Frontier) valid() bool { return len(f.Peaks) == bits.OnesCount64(f.N) }

// MerkleRoot returns the Merkle Tree Hash over ticket hashes, in order.
func MerkleRoot(tickets []Hash) Hash {
	var f Frontier
	for _, t := range tickets {
		f.Add(t)
	}
	return f.Root()
}

// InclusionProof returns the audit path of ticket index among tickets
// (RFC 9162 section 2.1.3.1).
func InclusionProof(tickets []Hash, index int) ([]Hash, error) {
	if index < 0 || index >= len(tickets) {
		return nil, fmt.Errorf("%w: index %d of %d tickets", ErrBadProof, index, len(tickets))
	}
	leaves := make([]Hash, len(tickets))
	for i, t := range tickets {
		leaves[i] = leafHash(t)
	}
	return path(index, leaves), nil
}

func path(m int, d []Hash) []Hash {
	if len(d) <= 1 {
		return nil
	}
	k := largestPow2Below(len(d))
	if m < k {
		return append(path(m, d[:k]), mth(d[k:]))
	}
	return append(path(m-k, d[k:]), mth(d[:k]))
}

func mth(leaves []Hash) Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := largestPow2Below(len(leaves))
	return nodeHash(mth(leaves[:k]), mth(leaves[k:]))
}

func largestPow2Below(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// VerifyInclusion checks that ticket is leaf index of a tree of n leaves
// with the given root (RFC 9162 section 2.1.3.2).
func VerifyInclusion(root, ticket Hash, index, n uint64, proof []Hash) error {
	if index >= n {
		return fmt.Errorf("%w: index %d of %d", ErrBadProof, index, n)
	}
	fn, sn := index, n-1
	r := leafHash(ticket)
	for _, p := range proof {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrBadProof)
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || r != root {
		return fmt.Errorf("%w: ticket %d is not in the tree", ErrBadProof, index)
	}
	return nil
}
