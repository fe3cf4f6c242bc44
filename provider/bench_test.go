package provider_test

import (
	"crypto/ed25519"
	"path/filepath"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// BenchmarkAccept books distinct aggregates from one gateway: decode,
// verify, the stream checks and one bbolt commit each.
func BenchmarkAccept(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	r, err := provider.Open(filepath.Join(b.TempDir(), "r.db"), provider.Keys(pub))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	msgs := make([][]byte, b.N)
	var enc protocol.Encoder
	for i := range msgs {
		a := protocol.Aggregate{Gateway: "gw-bench", Seq: uint64(i + 1), Provider: "p", Account: "a", Meter: "m",
			WindowStart: 1, WindowEnd: 2, Quantity: 10, Amount: 100, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
		if msgs[i], err = enc.AppendAggregate(nil, &a, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range msgs {
		if _, err := r.Accept(msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
