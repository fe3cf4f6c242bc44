package gateway_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// BenchmarkTopUp: one top-up through the books, committed with fsync, one
// at a time (as the operator API does).
func BenchmarkTopUp(b *testing.B) {
	tg := startGateway(b, nil, func(c *gateway.Config) { c.DTLS.Listen = "off" })
	books, terms := tg.Ingest().Books(), &tg.Ingest().Snapshot().Terms
	m := metering.Money{Nanos: 1_000_000, Currency: "EUR"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := books.TopUp(context.Background(), terms, "prepaid-1", m, ledger.Request{Ref: fmt.Sprint("ref-", i), Credential: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedeemVoucher: one voucher redeemed: strict decode, Ed25519
// verification against the trusted issuers, and the books' commit with
// fsync, one at a time.
func BenchmarkRedeemVoucher(b *testing.B) {
	priv, pubPath := issuerKey(b)
	tg := startGateway(b, nil, func(c *gateway.Config) { c.DTLS.Listen, c.VoucherIssuers = "off", []string{pubPath} })
	signer, _ := protocol.NewEd25519Signer(priv)
	vouchers := make([][]byte, b.N)
	var enc protocol.Encoder
	for i := range vouchers {
		v := protocol.Voucher{ID: fmt.Sprint("V-", i), Account: "prepaid-1", Amount: 1_000_000, Currency: "EUR",
			Expiry: uint64(time.Now().Add(time.Hour).UnixMilli())}
		vouchers[i], _ = enc.AppendVoucher(nil, &v, signer)
	}
	b.ResetTimer()
	for i := range vouchers {
		if _, err := tg.Ingest().RedeemVoucher(context.Background(), vouchers[i], "", "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
