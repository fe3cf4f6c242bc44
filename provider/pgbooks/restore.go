package pgbooks

import (
	"context"
	"errors"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider"
)

// The restore rule in PostgreSQL: see the provider package's restore.go
// for what it is and why; this is the same, table for table.

// restore books a restore record: the stream it names is superseded
// after its last seq. It holds the payout lock, so that no payout run
// pays an aggregate while it leaves the wallet.
func (bk *pgBooking) restore() error {
	if _, err := bk.tx.Exec(bk.ctx, "SELECT pg_advisory_xact_lock($1)", int64(payoutLock)); err != nil {
		return err
	}
	r := bk.rec.Restore
	money := map[string]*provider.Superseded{}
	if err := bk.supersede(int64(r.OldEpoch), int64(r.OldLastSeq), money, 0); err != nil {
		return err
	}
	// The restored state file has not applied the commands the gateway
	// answered after its backup: it is behind on them again.
	if _, err := bk.tx.Exec(bk.ctx, "DELETE FROM fleet_acks WHERE gateway = $1 AND epoch = $2 AND seq > $3",
		r.Gateway, int64(r.OldEpoch), int64(r.OldLastSeq)); err != nil {
		return err
	}
	eff := &provider.RestoreEffect{Superseded: protocol.StreamID{KeyID: bk.s.KeyID, Epoch: r.OldEpoch}, After: r.OldLastSeq}
	for _, m := range money {
		eff.Money = append(eff.Money, *m)
	}
	sort.Slice(eff.Money, func(i, j int) bool { return moneyKey(eff.Money[i]) < moneyKey(eff.Money[j]) })
	bk.res.Restore = eff
	return nil
}

func moneyKey(m provider.Superseded) string {
	return m.Kind + "\x00" + m.Provider + "\x00" + m.Account + "\x00" + m.Currency
}

// supersede takes what stream (kid, old) numbered after seq after out of
// the payable books; a stream restored from one backup twice loses the
// first restore's stream whole. The stream being booked supersedes it,
// at the restore record's time.
func (bk *pgBooking) supersede(old, after int64, money map[string]*provider.Superseded, depth int) error {
	ctx, tx, kid := bk.ctx, bk.tx, bk.kid
	by, at := bk.epoch, int64(bk.rec.Restore.Time)
	var prevAfter, prevBy int64
	err := tx.QueryRow(ctx, "SELECT after_seq, by_epoch FROM restores WHERE kid = $1 AND epoch = $2", kid, old).Scan(&prevAfter, &prevBy)
	switch {
	case err == nil:
		after = min(after, prevAfter)
		if prevBy != by && depth < 8 {
			if err := bk.supersede(prevBy, 0, money, depth+1); err != nil {
				return err
			}
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO restores (kid, epoch, after_seq, by_epoch, at_ms) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (kid, epoch) DO UPDATE SET after_seq = EXCLUDED.after_seq, by_epoch = EXCLUDED.by_epoch, at_ms = EXCLUDED.at_ms`,
		kid, old, after, by, at); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT seq, bytes FROM booked b WHERE kid = $1 AND epoch = $2 AND seq > $3
		AND NOT EXISTS (SELECT 1 FROM superseded s WHERE s.kid = b.kid AND s.epoch = b.epoch AND s.seq = b.seq) ORDER BY seq`, kid, old, after)
	if err != nil {
		return err
	}
	type rec struct {
		seq int64
		b   []byte
	}
	var later []rec
	for rows.Next() {
		var r rec
		if err := rows.Scan(&r.seq, &r.b); err != nil {
			return err
		}
		later = append(later, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range later {
		m, err := bk.supersedeRecord(old, r.seq, r.b)
		if err != nil {
			return err
		}
		if m != nil {
			addMoney(money, m)
		}
	}
	_, err = tx.Exec(ctx, `UPDATE streams SET high = least(high, $3), cut = $3,
		count = (SELECT count(*) FROM booked WHERE kid = $1 AND epoch = $2 AND seq <= $3) WHERE kid = $1 AND epoch = $2`, kid, old, after)
	return err
}

func addMoney(money map[string]*provider.Superseded, m *provider.Superseded) {
	k := moneyKey(*m)
	if money[k] == nil {
		c := *m
		c.Amount, c.Count, c.Paid = 0, 0, 0
		money[k] = &c
	}
	money[k].Amount += m.Amount
	money[k].Count++
	money[k].Paid += m.Paid
}

// supersedeRecord takes one booked record out of the payable books and
// keeps it as superseded; nil for a record without money.
func (bk *pgBooking) supersedeRecord(epoch, seq int64, b []byte) (*provider.Superseded, error) {
	m, err := strict.Decode(b)
	if err != nil {
		return nil, nil // booked records decoded when they came
	}
	s, quantity, tickets, ok := provider.SupersededOf(m)
	switch {
	case !ok:
		return nil, nil
	case m.Aggregate != nil:
		paid, err := bk.unbookAggregate(epoch, seq, m.Aggregate)
		if err != nil {
			return nil, err
		}
		if paid {
			s.Paid = s.Amount
		}
	default:
		if err := bk.unbookCredit(epoch, seq, m.Credit); err != nil {
			return nil, err
		}
	}
	return &s, bk.insertSuperseded(epoch, seq, s, quantity, tickets)
}

func (bk *pgBooking) insertSuperseded(epoch, seq int64, s provider.Superseded, quantity, tickets uint64) error {
	_, err := bk.tx.Exec(bk.ctx, `INSERT INTO superseded (kid, epoch, seq, kind, provider, account, currency, amount, quantity, tickets, paid)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10::numeric, $11) ON CONFLICT DO NOTHING`,
		bk.kid, epoch, seq, s.Kind, s.Provider, s.Account, s.Currency, int64(s.Amount),
		strconv.FormatUint(quantity, 10), strconv.FormatUint(tickets, 10), s.Paid > 0)
	return err
}

// unbookAggregate takes an aggregate out of its totals and its wallet
// (unpaid), or, paid out already, carries its amount as money to recover.
func (bk *pgBooking) unbookAggregate(epoch, seq int64, a *protocol.Aggregate) (bool, error) {
	ctx, tx := bk.ctx, bk.tx
	tag, err := tx.Exec(ctx, `UPDATE totals SET amount = amount - $4::numeric, quantity = quantity - $5::numeric,
		tickets = tickets - $6::numeric, aggregates = aggregates - 1
		WHERE provider = $1 AND account = $2 AND currency = $3 AND amount >= $4::numeric AND aggregates > 0`,
		a.Provider, a.Account, a.Currency, strconv.FormatUint(a.Amount, 10), strconv.FormatUint(a.Quantity, 10), strconv.FormatUint(a.Tickets, 10))
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() != 1 {
		return false, errors.New("receiver: superseding an aggregate: its totals hold less than it")
	}
	tag, err = tx.Exec(ctx, "DELETE FROM unpaid WHERE kid = $1 AND epoch = $2 AND seq = $3", bk.kid, epoch, seq)
	if err != nil || tag.RowsAffected() == 1 {
		return false, err
	}
	tag, err = tx.Exec(ctx, "UPDATE payout_meta SET carry = carry - $2 WHERE provider = $1", a.Provider, int64(a.Amount))
	if err == nil && tag.RowsAffected() != 1 {
		err = errors.New("receiver: superseding a paid aggregate: its provider has no payout")
	}
	return true, err
}

// unbookCredit takes a credit out of the credit totals; a voucher it
// credited first is then first credited by its next credit, if any.
func (bk *pgBooking) unbookCredit(epoch, seq int64, c *protocol.Credit) error {
	ctx, tx, kid := bk.ctx, bk.tx, bk.kid
	tag, err := tx.Exec(ctx, `UPDATE credits SET amount = amount - $4::numeric, count = count - 1
		WHERE account = $1 AND currency = $2 AND kind = $3 AND amount >= $4::numeric AND count > 0`,
		c.Account, c.Currency, provider.CreditKind(c), strconv.FormatUint(c.Amount, 10))
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return errors.New("receiver: superseding a credit: the credit totals hold less than it")
	}
	if c.Kind != protocol.CreditVoucher {
		return nil
	}
	if _, err := tx.Exec(ctx, "DELETE FROM doubles WHERE voucher = $1 AND kid = $2 AND epoch = $3 AND seq = $4", c.Ref, kid, epoch, seq); err != nil {
		return err
	}
	var first bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM vouchers WHERE voucher = $1 AND kid = $2 AND epoch = $3 AND seq = $4)",
		c.Ref, kid, epoch, seq).Scan(&first); err != nil || !first {
		return err
	}
	var nk []byte
	var ne, ns int64
	err = tx.QueryRow(ctx, "SELECT kid, epoch, seq FROM doubles WHERE voucher = $1 ORDER BY kid, epoch, seq LIMIT 1", c.Ref).Scan(&nk, &ne, &ns)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = tx.Exec(ctx, "DELETE FROM vouchers WHERE voucher = $1", c.Ref)
		return err
	}
	if err != nil {
		return err
	}
	for _, q := range []string{
		"UPDATE vouchers SET kid = $2, epoch = $3, seq = $4 WHERE voucher = $1",
		"DELETE FROM doubles WHERE voucher = $1 AND kid = $2 AND epoch = $3 AND seq = $4",
		"UPDATE doubles SET first_kid = $2, first_epoch = $3, first_seq = $4 WHERE voucher = $1",
	} {
		if _, err := tx.Exec(ctx, q, c.Ref, nk, ne, ns); err != nil {
			return err
		}
	}
	return nil
}

// cut is the seq after which the booking's stream is superseded; false
// if it is not.
func (bk *pgBooking) cut() (int64, bool, error) {
	var after int64
	err := bk.tx.QueryRow(bk.ctx, "SELECT after_seq FROM restores WHERE kid = $1 AND epoch = $2", bk.kid, bk.epoch).Scan(&after)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return after, err == nil, err
}

// superseded books a record of a superseded stream after its cut: kept,
// never payable.
func (bk *pgBooking) superseded() error {
	m, err := strict.Decode(bk.b)
	if err != nil {
		return nil
	}
	s, quantity, tickets, ok := provider.SupersededOf(m)
	if !ok {
		return nil
	}
	bk.res.Superseded = &s
	return bk.insertSuperseded(bk.epoch, bk.seq, s, quantity, tickets)
}

// pgReportRestores reads the restores and the money they superseded.
func pgReportRestores(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT r.kid, r.epoch, r.after_seq, r.by_epoch, r.at_ms, coalesce(b.gateway, '')
		FROM restores r LEFT JOIN bindings b ON b.kid = r.kid ORDER BY r.kid, r.epoch`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var kid []byte
		var epoch, after, by, at int64
		var gateway string
		if err := rows.Scan(&kid, &epoch, &after, &by, &at, &gateway); err != nil {
			return err
		}
		old, _ := protocol.StreamOf(kid, uint64(epoch))
		bys, _ := protocol.StreamOf(kid, uint64(by))
		rep.Restores = append(rep.Restores, provider.RestoreReport{Gateway: gateway, Superseded: old.String(), After: uint64(after),
			By: bys.String(), Time: at})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `SELECT kind, provider, account, currency, sum(amount)::text, count(*),
		coalesce(sum(amount) FILTER (WHERE paid), 0)::text FROM superseded GROUP BY kind, provider, account, currency
		ORDER BY kind, provider, account, currency`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var s provider.Superseded
		var amount, paid string
		var count int64
		if err := rows.Scan(&s.Kind, &s.Provider, &s.Account, &s.Currency, &amount, &count, &paid); err != nil {
			return err
		}
		if s.Amount, err = u64(amount); err != nil {
			return err
		}
		if s.Paid, err = u64(paid); err != nil {
			return err
		}
		s.Count = uint64(count)
		rep.Superseded = append(rep.Superseded, s)
	}
	return rows.Err()
}
