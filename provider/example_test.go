package provider_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// exampleAggregate signs an aggregate as a gateway would.
func exampleAggregate(priv ed25519.PrivateKey, epoch, seq, amount uint64) []byte {
	s, _ := protocol.NewEd25519Signer(priv)
	a := protocol.Aggregate{Gateway: "gw-berlin-1", Seq: seq, Epoch: epoch, Provider: "stadtwerk", Account: "acct-42",
		Meter: "energy_wh", WindowStart: 1_790_000_000_000, WindowEnd: 1_790_003_600_000, Quantity: amount / 300_000,
		Amount: amount, Currency: "EUR", Tickets: 3, MerkleRoot: make([]byte, 32)}
	var enc protocol.Encoder
	b, _ := enc.AppendAggregate(nil, &a, s)
	return b
}

// A provider's service books the aggregates it gets, each exactly once,
// and reads its totals.
func Example() {
	dir, _ := os.MkdirTemp("", "provider-example")
	defer os.RemoveAll(dir)
	pub, priv, _ := ed25519.GenerateKey(nil)

	// Trust the gateway's public key (farthing-data/gateway.key.pub) and
	// bind it to its gateway id.
	r, err := provider.Open(filepath.Join(dir, "books.db"), []provider.Trust{{Key: pub, Gateway: "gw-berlin-1"}})
	if err != nil {
		panic(err)
	}
	defer r.Close()

	for _, b := range [][]byte{
		exampleAggregate(priv, 7, 1, 1_500_000_000),
		exampleAggregate(priv, 7, 2, 900_000_000),
		exampleAggregate(priv, 7, 2, 900_000_000), // delivered twice
	} {
		bk, err := r.Accept(context.Background(), b)
		if err != nil {
			panic(err)
		}
		// bk.Stream.Key(seq) names it for logs: "KID.EPOCH/SEQ".
		fmt.Println("seq", bk.Aggregate.Seq, map[provider.Outcome]string{provider.Accepted: "booked", provider.Duplicate: "duplicate"}[bk.Outcome])
	}
	rep, _ := r.Report()
	for _, t := range rep.Totals {
		fmt.Printf("%s owes %s %d nano-%s\n", t.Account, t.Provider, t.Amount, t.Currency)
	}
	// Output:
	// seq 1 booked
	// seq 2 booked
	// seq 2 duplicate
	// acct-42 owes stadtwerk 2400000000 nano-EUR
}

// A conflict — a booked stream and seq with other bytes — is held, not
// booked and not a duplicate.
func ExampleReceiver_Accept_conflict() {
	dir, _ := os.MkdirTemp("", "provider-example")
	defer os.RemoveAll(dir)
	pub, priv, _ := ed25519.GenerateKey(nil)
	r, _ := provider.Open(filepath.Join(dir, "books.db"), provider.Keys(pub))
	defer r.Close()
	r.Accept(context.Background(), exampleAggregate(priv, 7, 1, 1_500_000_000))
	_, err := r.Accept(context.Background(), exampleAggregate(priv, 7, 1, 9_999_000_000))
	fmt.Println(provider.Refused(err), strings.Contains(err.Error(), "held for review"))
	rep, _ := r.Report()
	fmt.Println(len(rep.Held), rep.Held[0].Reason, rep.Held[0].Amount)
	// Output:
	// true true
	// 1 conflict 9999000000
}

// Receiver.Handler serves gateways' HTTP upstreams (type: http in
// farthingd.yaml), and GET /totals to a request with the read token.
func ExampleReceiver_Handler() {
	dir, _ := os.MkdirTemp("", "provider-example")
	defer os.RemoveAll(dir)
	pub, priv, _ := ed25519.GenerateKey(nil)
	r, _ := provider.Open(filepath.Join(dir, "books.db"), provider.Keys(pub))
	defer r.Close()
	srv := httptest.NewServer(r.Handler(slog.New(slog.DiscardHandler), provider.ReadAccess{Token: sha256.Sum256([]byte("s3cret-read-token"))}))
	defer srv.Close()
	resp, _ := http.Post(srv.URL+"/aggregates", "application/cose", strings.NewReader(string(exampleAggregate(priv, 7, 1, 5))))
	resp.Body.Close()
	fmt.Println(resp.Status)
	resp, _ = http.Get(srv.URL + "/totals")
	resp.Body.Close()
	fmt.Println(resp.Status)
	req, _ := http.NewRequest("GET", srv.URL+"/totals", nil)
	req.Header.Set("Authorization", "Bearer s3cret-read-token")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	fmt.Println(resp.Status, r.Stats().ReadsRefused)
	// Output:
	// 200 OK
	// 401 Unauthorized
	// 200 OK 1
}
