package gateway_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/gateway/upstream/jetstreamsink"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider/jsrecv"
)

// fleetSize is how many gateways BenchmarkCommandToFleet simulates.
const fleetSize = 100

// simGateway is a gateway reduced to its control channel: a JetStream
// consumer of its group's commands that verifies each and has its own
// books (a real state file, fsync'd) apply and acknowledge it.
type simGateway struct {
	id    string
	books *ledger.Books
	terms *ledger.Terms
	trust protocol.Verifier
}

func (g *simGateway) handle(applied chan<- string) func(context.Context, []byte) error {
	return func(ctx context.Context, b []byte) error {
		env, c, err := strict.DecodeCommand(b)
		if err != nil {
			return nil
		}
		in := ledger.CommandInput{Cmd: c, Raw: b}
		if env.Verify(g.trust, nil) != nil {
			in.Refuse = protocol.ReasonCommandForged
		}
		res, err := g.books.ApplyCommand(ctx, g.terms, in)
		if err == nil && res.Outcome == ledger.CommandApplied {
			applied <- c.ID
		}
		return err
	}
}

// BenchmarkCommandToFleet measures the time from a provider's push of one
// command to JetStream until all of fleetSize simulated gateways have
// applied it, each in its own state file with its acknowledgement
// (ms/command; p50 and max across the run as metrics).
func BenchmarkCommandToFleet(b *testing.B) {
	ns := &natsServer{port: freeTCP(b), dir: b.TempDir()}
	ns.start(b)
	defer ns.kill()
	url := fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
	_, priv, _ := ed25519.GenerateKey(nil)
	ctl, _ := protocol.NewEd25519Signer(priv)
	trust, _ := protocol.NewEd25519Verifier(priv.Public().(ed25519.PublicKey))
	pub, err := jsrecv.NewPublisher(url, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	applied := make(chan string, fleetSize*4)
	group := protocol.CommandTarget{Name: "fleet", Group: true}
	seq := uint64(0)
	push := func() string {
		seq++
		now := time.Now()
		c := protocol.Command{Target: group.Name, Group: true, Seq: seq, ID: fmt.Sprintf("c-%d", seq), Action: protocol.ActionRevokeVoucher,
			Vouchers: []string{fmt.Sprintf("V-%d", seq)}, NotBefore: uint64(now.UnixMilli()), Expiry: uint64(now.Add(time.Hour).UnixMilli())}
		signed, err := protocol.SignCommand(&c, ctl)
		if err == nil {
			err = pub.PublishCommand(ctx, group, c.ID, signed)
		}
		if err != nil {
			b.Fatal(err)
		}
		return c.ID
	}
	wait := func(id string) {
		for n := 0; n < fleetSize; {
			select {
			case got := <-applied:
				if got == id {
					n++
				}
			case <-time.After(time.Minute):
				b.Fatalf("command %s reached %d of %d gateways in a minute", id, n, fleetSize)
			}
		}
	}
	push() // the stream exists before the consumers
	for i := range fleetSize {
		g := newSimGateway(b, i, trust)
		wg.Add(1)
		go func() {
			defer wg.Done()
			jetstreamsink.Commands(ctx, jetstreamsink.CommandsConfig{URL: url, Gateway: g.id, Targets: []protocol.CommandTarget{group}},
				g.handle(applied), func(string, error) {})
		}()
	}
	wait("c-1")
	var took []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		wait(push())
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(fleetSize, "gateways")
}

func newSimGateway(b *testing.B, i int, trust protocol.Verifier) *simGateway {
	st, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := ledger.Init(ctx, st); err != nil {
		b.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	s, _ := protocol.NewEd25519Signer(priv)
	stream, base, err := ledger.OpenStream(ctx, st, s.KeyID())
	if err != nil {
		b.Fatal(err)
	}
	id := fmt.Sprintf("gw-%03d", i)
	return &simGateway{id: id, books: ledger.New(st, ledger.Config{Signer: s, Stream: stream, SeqBase: base}),
		terms: &ledger.Terms{GatewayID: id}, trust: trust}
}
