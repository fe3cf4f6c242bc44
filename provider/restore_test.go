package provider_test

import (
	"context"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// restoreRecord signs the first record of stream epoch (seq 1): the
// stream oldEpoch is superseded after oldLast.
func (g gw) restoreRecord(t *testing.T, id string, epoch, oldEpoch, oldLast uint64) []byte {
	t.Helper()
	r := protocol.Restore{Gateway: id, Seq: 1, Epoch: epoch, OldEpoch: oldEpoch, OldLastSeq: oldLast, Time: 1_790_000_000_000}
	var enc protocol.Encoder
	b, err := enc.AppendRestore(nil, &r, g.s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A restored gateway announces its restore first in its new stream: what
// the backup's stream numbered after the backup's last seq leaves the
// payable books (superseded_by_restore, with its amount) — an unpaid
// aggregate its wallet, a paid one as money to recover, a credit the
// credit totals — and records of that stream that come later are booked
// straight into that state; a resend is still a duplicate; the stream
// counts no gap past its cut; the wallet still reconciles to the nano.
func TestRestoreSupersedesTheOldStream(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a := newGW(t)
		r, err := open(provider.Keys(a.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx := context.Background()
		const c = 10_000_000 // a cent
		for seq := uint64(1); seq <= 3; seq++ {
			mustBook(t, r, a.agg(t, "gw-a", 100, seq, 1_000*c), provider.Accepted)
		}
		mustBook(t, r, a.credit(t, "gw-a", 100, 4, protocol.CreditVoucher, "V-9", 5_000*c), provider.Accepted)
		mustBook(t, r, a.agg(t, "gw-a", 100, 5, 2_000*c), provider.Accepted)
		pol := map[string]provider.PayoutPolicy{"p": {Provider: "p", Threshold: "0.000001 EUR", Payees: []provider.PayeeWeight{{ID: "x", Weight: 1}}}}
		if _, err := r.RunPayouts(ctx, pol, time.Now()); err != nil {
			t.Fatal(err)
		}
		mustBook(t, r, a.agg(t, "gw-a", 100, 6, 4_000*c), provider.Accepted) // unpaid at the restore

		bk := mustBook(t, r, a.restoreRecord(t, "gw-a", 200, 100, 3), provider.Accepted)
		if bk.Restored == nil || bk.Restored.After != 3 || bk.Restored.Superseded.Epoch != 100 {
			t.Fatalf("restore booking %+v", bk.Restored)
		}
		late := mustBook(t, r, a.agg(t, "gw-a", 100, 7, 8_000*c), provider.Accepted) // the old gateway's last, delayed
		if late.Superseded == nil || late.Superseded.Amount != 8_000*c {
			t.Fatalf("a record of the superseded stream after its cut: %+v", late.Superseded)
		}
		mustBook(t, r, a.agg(t, "gw-a", 100, 5, 2_000*c), provider.Duplicate)
		mustBook(t, r, a.agg(t, "gw-a", 200, 2, 16_000*c), provider.Accepted) // the new stream's usage

		amount, aggs, rep := total(t, r)
		if amount != 3*1_000*c+16_000*c || aggs != 4 {
			t.Errorf("payable totals %d in %d aggregates; want %d in 4", amount, aggs, 3*1_000*c+16_000*c)
		}
		var agg, credit provider.Superseded
		for _, s := range rep.Superseded {
			switch s.Kind {
			case "aggregate":
				agg = s
			case "credit":
				credit = s
			}
		}
		if agg.Amount != 2_000*c+4_000*c+8_000*c || agg.Count != 3 || agg.Paid != 2_000*c || credit.Amount != 5_000*c || credit.Count != 1 {
			t.Errorf("superseded %+v; want aggregates 14000 (3, 2000 paid) and a credit of 5000", rep.Superseded)
		}
		for _, c := range rep.Credits {
			if c.Amount != 0 || c.Count != 0 {
				t.Errorf("credits after the restore %+v; want the superseded voucher out", c)
			}
		}
		if len(rep.Restores) != 1 || rep.Restores[0].After != 3 || rep.Restores[0].Gateway != "gw-a" {
			t.Errorf("restores %+v", rep.Restores)
		}
		for _, s := range rep.Streams {
			if s.Epoch == 100 && (s.High != 3 || s.Missing != 0) {
				t.Errorf("the superseded stream: %+v; want high 3, nothing missing", s)
			}
		}
		ws, err := r.Wallets(ctx)
		if err != nil || len(ws) != 1 {
			t.Fatal(ws, err)
		}
		if w := ws[0]; !w.Balanced || w.Carried != -2_000*c || w.Pending != 16_000*c || w.Received != 3*1_000*c+16_000*c {
			t.Errorf("wallet %+v; want the paid 2000 carried as money to recover, balanced", w)
		}
		// The voucher may be redeemed again by the restored gateway: its
		// superseded credit is no first redemption.
		if bk := mustBook(t, r, a.credit(t, "gw-a", 200, 3, protocol.CreditVoucher, "V-9", 5_000*c), provider.Accepted); bk.DoubleRedemption != "" {
			t.Errorf("the restored gateway's redemption flagged as a double of %s", bk.DoubleRedemption)
		}
	})
}

// A gateway restored from one backup twice: the second restore names
// the backup's stream again, and the first restore's stream (which the
// backup holds nothing of) leaves the payable books whole.
func TestRestoreFromOneBackupTwice(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a := newGW(t)
		r, err := open(provider.Keys(a.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		const c = 10_000_000 // a cent
		for seq := uint64(1); seq <= 3; seq++ {
			mustBook(t, r, a.agg(t, "gw-a", 100, seq, 1_000*c), provider.Accepted)
		}
		mustBook(t, r, a.agg(t, "gw-a", 100, 4, 2_000*c), provider.Accepted) // after the backup
		mustBook(t, r, a.restoreRecord(t, "gw-a", 200, 100, 3), provider.Accepted)
		mustBook(t, r, a.agg(t, "gw-a", 200, 2, 4_000*c), provider.Accepted)

		bk := mustBook(t, r, a.restoreRecord(t, "gw-a", 300, 100, 3), provider.Accepted)
		if bk.Restored == nil || len(bk.Restored.Money) != 1 || bk.Restored.Money[0].Amount != 4_000*c || bk.Restored.Money[0].Count != 1 {
			t.Fatalf("the second restore took out %+v; want the first restore's 4000 (1 aggregate)", bk.Restored)
		}
		mustBook(t, r, a.agg(t, "gw-a", 300, 2, 500*c), provider.Accepted)
		amount, aggs, rep := total(t, r)
		if amount != 3*1_000*c+500*c || aggs != 4 {
			t.Errorf("payable totals %d in %d aggregates; want %d in 4", amount, aggs, 3*1_000*c+500*c)
		}
		var out provider.Superseded
		for _, s := range rep.Superseded {
			if s.Kind == "aggregate" {
				out = s
			}
		}
		if out.Amount != 2_000*c+4_000*c || out.Count != 2 {
			t.Errorf("superseded %+v; want 6000 in 2 aggregates", rep.Superseded)
		}
	})
}
