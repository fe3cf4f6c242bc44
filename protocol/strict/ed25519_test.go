package strict_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/farthing-iot/farthing/protocol/strict"
)

func keys(n int) ([]ed25519.PublicKey, []ed25519.PrivateKey) {
	pubs, privs := make([]ed25519.PublicKey, n), make([]ed25519.PrivateKey, n)
	for i := range n {
		privs[i] = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32))
		pubs[i] = privs[i].Public().(ed25519.PublicKey)
	}
	return pubs, privs
}

// A batch answers for each signature exactly what single verification
// answers: all good, or with one bad signature anywhere in it.
func TestEd25519BatchAgreesWithSingle(t *testing.T) {
	const n = 40
	pubs, privs := keys(n)
	msgs, sigs := make([][]byte, n), make([][]byte, n)
	for i := range n {
		msgs[i] = fmt.Appendf(nil, "ticket %d", i)
		sigs[i] = ed25519.Sign(privs[i], msgs[i])
	}
	for _, bad := range []int{-1, 0, 17, n - 1} {
		var b strict.Ed25519Batch
		ok := make([]bool, n)
		for i := range n {
			sig := sigs[i]
			if i == bad {
				sig = bytes.Clone(sig)
				sig[5] ^= 1
			}
			b.Add(pubs[i], msgs[i], sig)
		}
		good := b.Verify(ok)
		for i := range n {
			if ok[i] != (i != bad) {
				t.Fatalf("bad=%d: signature %d verified %v", bad, i, ok[i])
			}
		}
		if want := n - map[bool]int{true: 1, false: 0}[bad >= 0]; good != want {
			t.Fatalf("bad=%d: %d good, want %d", bad, good, want)
		}
		if b.Len() != 0 {
			t.Fatal("Verify did not empty the batch")
		}
	}
	// A malformed key or signature is refused, not a panic.
	var b strict.Ed25519Batch
	b.Add(pubs[0][:5], msgs[0], sigs[0])
	b.Add(pubs[1], msgs[1], sigs[1][:10])
	b.Add(pubs[2], msgs[2], sigs[2])
	ok := make([]bool, 3)
	if b.Verify(ok) != 1 || ok[0] || ok[1] || !ok[2] {
		t.Fatalf("malformed inputs: %v", ok)
	}
}

// The rule is ZIP-215, documented in ed25519.go: a signature whose R is a
// non-canonical encoding is refused by crypto/ed25519 (RFC 8032, with its
// byte comparison of R) and accepted here, alone and in a batch.
func TestEd25519RuleIsZIP215(t *testing.T) {
	// A is the identity point; R is the identity encoded with y = p + 1;
	// S = 0. The cofactored equation holds: [8][0]B = [8]R + [8][k]A = 0.
	pub, _ := hex.DecodeString("0100000000000000000000000000000000000000000000000000000000000000")
	r, _ := hex.DecodeString("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	sig := append(r, make([]byte, 32)...)
	msg := []byte("edge")
	if ed25519.Verify(pub, msg, sig) {
		t.Fatal("crypto/ed25519 accepted a non-canonical R: the test's premise is wrong")
	}
	if !strict.VerifyEd25519(pub, msg, sig) {
		t.Fatal("ZIP-215 refused a signature that satisfies the cofactored equation")
	}
	pubs, privs := keys(3)
	var b strict.Ed25519Batch
	b.Add(pub, msg, sig)
	for i := range pubs {
		b.Add(pubs[i], msg, ed25519.Sign(privs[i], msg))
	}
	ok := make([]bool, 4)
	if b.Verify(ok) != 4 {
		t.Fatalf("the batch disagreed with single verification: %v", ok)
	}
	// What crypto/ed25519 signs verifies under both rules.
	v, err := strict.NewEd25519Verifier(pubs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(msg, ed25519.Sign(privs[0], msg)); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(msg, sig); err == nil {
		t.Fatal("a signature for another key verified")
	}
}

func BenchmarkEd25519(b *testing.B) {
	pubs, privs := keys(64)
	msg := bytes.Repeat([]byte{7}, 100)
	sigs := make([][]byte, len(pubs))
	for i := range pubs {
		sigs[i] = ed25519.Sign(privs[i], msg)
	}
	b.Run("crypto-ed25519", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ed25519.Verify(pubs[i%64], msg, sigs[i%64])
		}
	})
	b.Run("zip215-single", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			strict.VerifyEd25519(pubs[i%64], msg, sigs[i%64])
		}
	})
	for _, n := range []int{8, 32, 64} {
		b.Run(fmt.Sprintf("zip215-batch-%d", n), func(b *testing.B) {
			var bt strict.Ed25519Batch
			ok := make([]bool, n)
			for b.Loop() {
				for i := range n {
					bt.Add(pubs[i], msg, sigs[i])
				}
				bt.Verify(ok)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/sig")
		})
	}
}
