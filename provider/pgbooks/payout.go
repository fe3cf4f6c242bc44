package pgbooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// payoutLock is the advisory lock a payout run holds in PostgreSQL: one
// run at a time, whichever receiver starts it.
const payoutLock = 7226706402

// runPayouts makes the payouts policies call for, each provider's in one
// transaction under the payout lock.
func (pg *pgBooks) RunPayouts(ctx context.Context, policies map[string]provider.PayoutPolicy, now time.Time, scheduled bool) ([]provider.Payout, error) {
	return provider.EachPayout(policies, func(pol provider.PayoutPolicy) (p *provider.Payout, err error) {
		err = pgx.BeginFunc(ctx, pg.pool, func(tx pgx.Tx) error {
			p = nil
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(payoutLock)); err != nil {
				return err
			}
			if scheduled {
				due, err := pgDueAt(ctx, tx, pol, now)
				if err != nil || !due {
					return err
				}
			}
			var err error
			p, err = pgPayOut(ctx, tx, pol, now)
			return err
		})
		return p, err
	})
}

// pgDueAt is dueAt on PostgreSQL.
func pgDueAt(ctx context.Context, tx pgx.Tx, pol provider.PayoutPolicy, now time.Time) (bool, error) {
	sc, err := provider.ParseSchedule(pol.Schedule)
	if err != nil {
		return false, err
	}
	if !sc.Daily {
		return sc.Threshold, nil
	}
	slot := sc.LastSlot(now).Unix()
	var last int64
	err = tx.QueryRow(ctx, "SELECT slot FROM payout_slot WHERE provider = $1", pol.Provider).Scan(&last)
	if err == nil && last >= slot {
		return sc.Threshold, nil // this day's time was considered already
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO payout_slot (provider, slot) VALUES ($1, $2)
		ON CONFLICT (provider) DO UPDATE SET slot = EXCLUDED.slot`, pol.Provider, slot)
	return true, err
}

// pgPayOut is payOut on PostgreSQL.
func pgPayOut(ctx context.Context, tx pgx.Tx, pol provider.PayoutPolicy, now time.Time) (*provider.Payout, error) {
	th, _, err := pol.Compile()
	if err != nil {
		return nil, err
	}
	var number, carry int64
	var cur string
	err = tx.QueryRow(ctx, "SELECT number, carry, currency FROM payout_meta WHERE provider = $1", pol.Provider).Scan(&number, &carry, &cur)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, err
	case cur != string(th.Currency):
		return nil, fmt.Errorf("%w: the wallet is in %s, the policy in %s", provider.ErrPolicy, cur, th.Currency)
	}
	rows, err := tx.Query(ctx, `SELECT u.kid, u.epoch, u.seq, u.amount, s.high > s.count FROM unpaid u
		JOIN streams s ON s.kid = u.kid AND s.epoch = u.epoch
		WHERE u.provider = $1 AND u.currency = $2 ORDER BY u.kid, u.epoch, u.seq FOR UPDATE OF u`, pol.Provider, string(th.Currency))
	if err != nil {
		return nil, err
	}
	var unpaid []provider.UnpaidAggregate
	gapped := map[string]bool{}
	for rows.Next() {
		var kid []byte
		var epoch, seq, amount int64
		var gap bool
		if err := rows.Scan(&kid, &epoch, &seq, &amount, &gap); err != nil {
			return nil, err
		}
		s, _ := protocol.StreamOf(kid, uint64(epoch))
		unpaid = append(unpaid, provider.UnpaidAggregate{Stream: s, Seq: uint64(seq), Amount: uint64(amount)})
		if gap {
			gapped[s.String()] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var gaps []string
	for g := range gapped {
		gaps = append(gaps, g)
	}
	sort.Strings(gaps)
	p, err := provider.PlanPayout(pol, provider.WalletState{Number: uint64(number), Carry: metering.Nanos(carry)}, unpaid, gaps, now)
	if p == nil || err != nil {
		return nil, err
	}
	for _, u := range unpaid {
		if _, err := tx.Exec(ctx, "DELETE FROM unpaid WHERE kid = $1 AND epoch = $2 AND seq = $3",
			u.Stream.KeyID[:], int64(u.Stream.Epoch), int64(u.Seq)); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO payouts (provider, number, payout) VALUES ($1, $2, $3)", p.Provider, int64(p.Number), b); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO payout_meta (provider, number, carry, currency) VALUES ($1, $2, $3, $4)
		ON CONFLICT (provider) DO UPDATE SET number = EXCLUDED.number, carry = EXCLUDED.carry, currency = EXCLUDED.currency`,
		p.Provider, int64(p.Number), int64(p.CarryOut), p.Currency)
	return p, err
}

// payouts lists the payouts, by provider and number.
func (pg *pgBooks) Payouts(ctx context.Context) ([]provider.Payout, error) {
	rows, err := pg.pool.Query(ctx, "SELECT payout FROM payouts ORDER BY provider, number")
	if err != nil {
		return nil, err
	}
	var out []provider.Payout
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var p provider.Payout
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// wallets reconciles each provider's wallet in one repeatable-read
// transaction.
func (pg *pgBooks) Wallets(ctx context.Context) ([]provider.Wallet, error) {
	ws := provider.WalletBook{}
	get := ws.Get
	err := pgx.BeginTxFunc(ctx, pg.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		q := func(sql string, scan func(pgx.Rows) error) error {
			rows, err := tx.Query(ctx, sql)
			if err != nil {
				return err
			}
			for rows.Next() {
				if err := scan(rows); err != nil {
					return err
				}
			}
			return rows.Err()
		}
		if err := q("SELECT provider, currency, sum(amount)::text FROM totals GROUP BY provider, currency", func(r pgx.Rows) error {
			var p, c, s string
			if err := r.Scan(&p, &c, &s); err != nil {
				return err
			}
			v, err := u64(s)
			w := get(p)
			w.Received, w.Currency = metering.Nanos(v), c
			return err
		}); err != nil {
			return err
		}
		if err := q("SELECT provider, sum(amount)::text FROM unpaid GROUP BY provider", func(r pgx.Rows) error {
			var p, s string
			if err := r.Scan(&p, &s); err != nil {
				return err
			}
			v, err := u64(s)
			get(p).Pending = metering.Nanos(v)
			return err
		}); err != nil {
			return err
		}
		if err := q("SELECT provider, carry FROM payout_meta", func(r pgx.Rows) error {
			var p string
			var c int64
			err := r.Scan(&p, &c)
			get(p).Carried = metering.Nanos(c)
			return err
		}); err != nil {
			return err
		}
		return q("SELECT payout FROM payouts", func(r pgx.Rows) error {
			var b []byte
			if err := r.Scan(&b); err != nil {
				return err
			}
			return ws.AddPayout(b)
		})
	})
	return ws.List(), err
}
