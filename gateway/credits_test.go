package gateway_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// TestCreditsGoUpstreamAndDoubleRedemptionIsFlagged: two gateways that
// trust one voucher issuer send their top-ups and redemptions upstream as
// signed credit records in their aggregate streams; one receiver books
// them, reconciles the credit each gateway granted, and flags the voucher
// the customer redeemed at both (each gateway alone had to accept it: it
// works offline).
func TestCreditsGoUpstreamAndDoubleRedemptionIsFlagged(t *testing.T) {
	priv, pubPath := issuerKey(t)

	recvMux := &swapHandler{}
	srv := httptest.NewServer(recvMux)
	defer srv.Close()
	var gws []*testGateway
	var keys []ed25519.PublicKey
	for i := 0; i < 2; i++ {
		tg := startGateway(t, nil, func(c *gateway.Config) {
			c.VoucherIssuers = []string{pubPath}
			c.Upstreams = []gateway.UpstreamConfig{{Name: "provider", Type: "http", URL: srv.URL + "/aggregates"}}
			c.Forward = gateway.ForwardSettings{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
		})
		gws = append(gws, tg)
		keys = append(keys, gatewayPub(t, tg))
	}
	r, err := provider.Open(filepath.Join(t.TempDir(), "r.db"), provider.Keys(keys...))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recvMux.set(r.Handler(slog.New(slog.NewTextHandler(io.Discard, nil)), provider.ReadAccess{}))

	signer, _ := protocol.NewEd25519Signer(priv)
	var enc protocol.Encoder
	v, _ := enc.AppendVoucher(nil, &protocol.Voucher{ID: "V-TWICE", Account: "prepaid-1", Amount: 3_000_000_000, Currency: "EUR",
		Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}, signer)
	ctx := context.Background()
	for _, tg := range gws {
		if _, err := tg.Ingest().RedeemVoucher(ctx, v, "", "test"); err != nil {
			t.Fatalf("each gateway alone accepts the voucher: %v", err)
		}
	}
	if _, err := gws[0].Ingest().Books().TopUp(ctx, &gws[0].Ingest().Snapshot().Terms, "prepaid-1",
		metering.Money{Nanos: 500_000_000, Currency: "EUR"}, ledger.Request{Ref: "pay-7", Credential: "test"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		var vouchers, topUps uint64
		for _, c := range rep.Credits {
			if c.Kind == protocol.CreditVoucher {
				vouchers += c.Amount
			} else {
				topUps += c.Amount
			}
		}
		if vouchers == 6_000_000_000 && topUps == 500_000_000 {
			if len(rep.Doubles) != 1 || rep.Doubles[0].Voucher != "V-TWICE" {
				t.Fatalf("the voucher redeemed at both gateways was not flagged: %+v", rep.Doubles)
			}
			for _, s := range rep.Streams {
				if s.Missing != 0 {
					t.Fatalf("stream %s misses %d", s.Stream, s.Missing)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("credits at the receiver: %+v (stats %+v)", rep.Credits, rep.Stats)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tg := range gws {
		insp, _ := tg.Books().Inspect(nil)
		if !insp.Reconcile.Balanced {
			t.Fatalf("gateway books: %+v", insp.Reconcile)
		}
	}
}

// swapHandler lets a test install the receiver once the gateways' keys
// exist; until then it answers 503, and the forwarders retry.
type swapHandler struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swapHandler) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	if h == nil {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}
