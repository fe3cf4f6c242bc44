// Package pgbooks keeps a provider.Receiver's books in PostgreSQL, so that
// several receivers share one database: every record is booked in one
// transaction with its totals, keyed by its stream and seq, so a record
// delivered twice — to the same receiver or to another one — is booked
// once and answered duplicate; a transport acknowledges only after the
// commit. The schema is in migrations/, applied in order by Open, each in
// a transaction under an advisory lock, so receivers starting together
// migrate once. An importer of package provider links pgx only if it
// imports this package.
package pgbooks

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrSchemaNewer: the database's schema was made by a newer build.
var ErrSchemaNewer = errors.New("receiver: the database's schema is newer than this build")

// Options tune the connection pool.
type Options struct {
	// MaxConns bounds the pool; default 8.
	MaxConns int32
	// ConnectTimeout bounds each connection attempt; default 5s.
	ConnectTimeout time.Duration
}

// pgBooks are the books in PostgreSQL.
type pgBooks struct {
	pool *pgxpool.Pool
}

// Open opens the books in the PostgreSQL database at url (a postgres://
// URL), creating or migrating its schema, and returns a receiver on them
// that trusts these gateway keys. Payout runs take a database lock, so one
// runs at a time whichever receiver starts it.
func Open(ctx context.Context, url string, trust []provider.Trust, opts Options) (*provider.Receiver, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("receiver: --db: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8
	}
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	if cfg.ConnConfig.ConnectTimeout <= 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	pg := &pgBooks{pool: pool}
	if err := pg.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	r, err := provider.NewReceiver(pg, trust)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if err := pg.bind(ctx, trust); err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

// SchemaVersion is the newest migration this build has.
func SchemaVersion() int {
	names, _ := fs.Glob(migrations, "migrations/*.sql")
	return len(names)
}

// migrate applies the migrations the database has not had, refusing a
// database whose schema is newer than this build.
func (pg *pgBooks) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	return pgx.BeginFunc(ctx, pg.pool, func(tx pgx.Tx) error {
		// One receiver migrates at a time; the others wait, then find it done.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(7226706401)"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&have); err != nil {
			return err
		}
		if have > len(names) {
			return fmt.Errorf("%w: the database is at version %d, this build knows up to %d: run a newer farthing", ErrSchemaNewer, have, len(names))
		}
		for i := have; i < len(names); i++ {
			sql, err := migrations.ReadFile(names[i])
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("receiver: migration %s: %w", names[i], err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", i+1, names[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// bind records the configured key bindings, refusing one that differs
// from what the books hold.
func (pg *pgBooks) bind(ctx context.Context, trust []provider.Trust) error {
	for _, t := range trust {
		if t.Gateway == "" {
			continue
		}
		kid := protocol.KeyIDOf(protocol.AlgEdDSA, t.Key)
		var old string
		err := pg.pool.QueryRow(ctx, `INSERT INTO bindings (kid, gateway) VALUES ($1, $2)
			ON CONFLICT (kid) DO UPDATE SET gateway = bindings.gateway RETURNING gateway`, kid[:], t.Gateway).Scan(&old)
		if err != nil {
			return fmt.Errorf("receiver: %w", err)
		}
		if old != t.Gateway {
			return fmt.Errorf("receiver: key %x is bound to gateway %q in this database, not %q", kid, old, t.Gateway)
		}
	}
	return nil
}

func (pg *pgBooks) Close() error { pg.pool.Close(); return nil }

func (pg *pgBooks) EachBooked(ctx context.Context, fn func(b []byte) error) error {
	rows, err := pg.pool.Query(ctx, "SELECT bytes FROM booked ORDER BY kid, epoch, seq")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return err
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	return rows.Err()
}

// transient reports whether a transaction may simply be run again.
func transient(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Book books one verified record in one transaction (retried on a
// serialization failure or a deadlock).
func (pg *pgBooks) Book(ctx context.Context, s protocol.StreamID, rec provider.Record, b []byte) (provider.BookResult, error) {
	var res provider.BookResult
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = pgx.BeginFunc(ctx, pg.pool, func(tx pgx.Tx) error {
			res = provider.BookResult{}
			bk := &pgBooking{ctx: ctx, tx: tx, s: s, rec: rec, b: b, res: &res, kid: s.KeyID[:], epoch: int64(s.Epoch), seq: int64(rec.Seq)}
			return bk.book()
		})
		if !transient(err) {
			break
		}
	}
	return res, err
}

// book books the record: its key binding, its (stream, seq), its stream,
// then what its kind adds (a credit, chain progress, a held ticket, an
// aggregate).
func (bk *pgBooking) book() error {
	ctx, tx, rec, b, res := bk.ctx, bk.tx, bk.rec, bk.b, bk.res
	var bound string
	if err := tx.QueryRow(ctx, `INSERT INTO bindings (kid, gateway) VALUES ($1, $2)
		ON CONFLICT (kid) DO UPDATE SET gateway = bindings.gateway RETURNING gateway`, bk.kid, rec.Gateway).Scan(&bound); err != nil {
		return err
	}
	if bound != rec.Gateway {
		res.Bound = bound
		return bk.hold(provider.HoldWrongGateway)
	}
	fresh, err := bk.insert()
	if err != nil || !fresh {
		return err
	}
	if err := bk.stream(); err != nil {
		return err
	}
	if rec.Restore != nil {
		return bk.restore()
	}
	if cut, ok, err := bk.cut(); err != nil {
		return err
	} else if ok && bk.seq > cut {
		return bk.superseded()
	}
	switch {
	case rec.Credit != nil:
		return bk.credit()
	case rec.Progress != nil:
		return bk.progress()
	case rec.Ack != nil:
		return bk.ack()
	case rec.Hold != nil:
		h := rec.Hold
		_, err := tx.Exec(ctx, `INSERT INTO quarantine (gateway, device, ticket, seq, bytes) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (gateway, device, ticket) DO UPDATE SET seq = EXCLUDED.seq, bytes = EXCLUDED.bytes
			WHERE quarantine.seq < EXCLUDED.seq`, h.Gateway, h.Device, int64(h.Ticket), bk.seq, b)
		return err
	}
	return bk.aggregate()
}

// pgBooking is one record being booked in one transaction.
type pgBooking struct {
	ctx        context.Context
	tx         pgx.Tx
	s          protocol.StreamID
	rec        provider.Record
	b          []byte
	res        *provider.BookResult
	kid        []byte
	epoch, seq int64
}

// hold keeps the record aside, with why, instead of booking it.
func (bk *pgBooking) hold(reason provider.HoldReason) error {
	h := sha256.Sum256(bk.b)
	_, err := bk.tx.Exec(bk.ctx, `INSERT INTO held (kid, epoch, seq, hash, reason, at_ms, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT DO NOTHING`, bk.kid, bk.epoch, bk.seq, h[:8], reason.String(), time.Now().UnixMilli(), bk.b)
	bk.res.Held = reason
	return err
}

// insert books the record's (stream, seq); false when it was booked
// before: a duplicate (the same bytes) or a conflict (held).
func (bk *pgBooking) insert() (bool, error) {
	ctx, tx := bk.ctx, bk.tx
	tag, err := tx.Exec(ctx, `INSERT INTO booked (kid, epoch, seq, gateway, bytes) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT DO NOTHING`, bk.kid, bk.epoch, bk.seq, bk.rec.Gateway, bk.b)
	if err != nil || tag.RowsAffected() != 0 {
		return err == nil, err
	}
	var old []byte
	if err := tx.QueryRow(ctx, "SELECT bytes FROM booked WHERE kid = $1 AND epoch = $2 AND seq = $3", bk.kid, bk.epoch, bk.seq).Scan(&old); err != nil {
		return false, err
	}
	if string(old) == string(bk.b) {
		bk.res.Duplicate = true
		return false, nil
	}
	return false, bk.hold(provider.HoldConflict)
}

// stream counts the record in its stream; the first record of a new epoch
// of a known key is a reset, recorded with the epoch it replaced.
func (bk *pgBooking) stream() error {
	ctx, tx, kid, epoch := bk.ctx, bk.tx, bk.kid, bk.epoch
	var inserted bool
	if err := tx.QueryRow(ctx, `INSERT INTO streams (kid, epoch, gateway, high, count, first_ms) VALUES ($1, $2, $3, $4, 1, $5)
		ON CONFLICT (kid, epoch) DO UPDATE SET
			high = CASE WHEN EXCLUDED.high > streams.cut THEN streams.high ELSE greatest(streams.high, EXCLUDED.high) END,
			count = CASE WHEN EXCLUDED.high > streams.cut THEN streams.count ELSE streams.count + 1 END
		RETURNING xmax = 0`, kid, epoch, bk.rec.Gateway, bk.seq, time.Now().UnixMilli()).Scan(&inserted); err != nil {
		return err
	}
	if !inserted {
		return nil
	}
	var prev int64
	err := tx.QueryRow(ctx, "SELECT epoch FROM latest WHERE kid = $1", kid).Scan(&prev)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case prev != epoch:
		var last int64
		if err := tx.QueryRow(ctx, "SELECT high FROM streams WHERE kid = $1 AND epoch = $2", kid, prev).Scan(&last); err == nil {
			bk.res.Reset = &provider.Reset{Epoch: uint64(prev), LastSeq: uint64(last)}
			if _, err := tx.Exec(ctx, "UPDATE streams SET reset_from = $3, reset_from_last = $4 WHERE kid = $1 AND epoch = $2",
				kid, epoch, prev, last); err != nil {
				return err
			}
		}
	}
	_, err = tx.Exec(ctx, `INSERT INTO latest (kid, epoch) VALUES ($1, $2) ON CONFLICT (kid) DO UPDATE SET epoch = EXCLUDED.epoch`, kid, epoch)
	return err
}

// credit books a credit record; a voucher credited before (in any
// stream) is booked and flagged as a double redemption.
func (bk *pgBooking) credit() error {
	ctx, tx, kid, epoch, seq := bk.ctx, bk.tx, bk.kid, bk.epoch, bk.seq
	c := bk.rec.Credit
	if _, err := tx.Exec(ctx, `INSERT INTO credits (account, currency, kind, amount, count) VALUES ($1, $2, $3, $4, 1)
		ON CONFLICT (account, currency, kind) DO UPDATE SET amount = credits.amount + EXCLUDED.amount, count = credits.count + 1`,
		c.Account, c.Currency, provider.CreditKind(c), int64(c.Amount)); err != nil {
		return err
	}
	if c.Kind == protocol.CreditAdjustment && c.Voucher != "" {
		amount := int64(c.Amount)
		if c.Debit {
			amount = -amount
		}
		_, err := tx.Exec(ctx, `INSERT INTO resolutions (voucher, kid, epoch, seq, amount, reason) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (voucher) DO UPDATE SET kid = EXCLUDED.kid, epoch = EXCLUDED.epoch, seq = EXCLUDED.seq,
			amount = EXCLUDED.amount, reason = EXCLUDED.reason`, c.Voucher, kid, epoch, seq, amount, c.Reason)
		return err
	}
	if c.Kind != protocol.CreditVoucher {
		return nil
	}
	var fk []byte
	var fe, fs int64
	if err := tx.QueryRow(ctx, `INSERT INTO vouchers (voucher, kid, epoch, seq) VALUES ($1, $2, $3, $4)
		ON CONFLICT (voucher) DO UPDATE SET voucher = vouchers.voucher RETURNING kid, epoch, seq`, c.Ref, kid, epoch, seq).Scan(&fk, &fe, &fs); err != nil {
		return err
	}
	if string(fk) == string(kid) && fe == epoch && fs == seq {
		return nil
	}
	first, _ := protocol.StreamOf(fk, uint64(fe))
	bk.res.Double = first.Key(uint64(fs))
	_, err := tx.Exec(ctx, `INSERT INTO doubles (voucher, kid, epoch, seq, first_kid, first_epoch, first_seq)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`, c.Ref, kid, epoch, seq, fk, fe, fs)
	return err
}

// progress books a chain progress record whose paywords prove its usage;
// one they do not is held.
func (bk *pgBooking) progress() error {
	rec := &bk.rec
	if rec.Unproven != nil {
		bk.res.Why = rec.Unproven.Error()
		return bk.hold(provider.HoldPaywordUnproven)
	}
	p, u := rec.Progress, rec.Usage
	if err := pgProve(bk.ctx, bk.tx, bk.s, rec); errors.Is(err, provider.ErrPayword) {
		bk.res.Why = err.Error()
		return bk.hold(provider.HoldPaywordUnproven)
	} else if err != nil {
		return err
	}
	var unattested uint64
	if !u.Attested {
		unattested = u.Quantity
	}
	_, err := bk.tx.Exec(bk.ctx, `INSERT INTO paywords (provider, account, meter, quantity, records, unattested) VALUES ($1, $2, $3, $4::numeric, 1, $5::numeric)
		ON CONFLICT (provider, account, meter) DO UPDATE SET quantity = paywords.quantity + EXCLUDED.quantity, records = paywords.records + 1,
		unattested = paywords.unattested + EXCLUDED.unattested`,
		p.Provider, p.Account, u.Meter, strconv.FormatUint(u.Quantity, 10), strconv.FormatUint(unattested, 10))
	return err
}

// aggregate books an aggregate: its payword claim, its place in its
// provider's wallet (unpaid) and its account's totals.
func (bk *pgBooking) aggregate() error {
	ctx, tx := bk.ctx, bk.tx
	a := bk.rec.Agg
	if a.Proven > 0 {
		if err := pgClaim(ctx, tx, bk.s, a); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO unpaid (kid, epoch, seq, provider, currency, amount) VALUES ($1, $2, $3, $4, $5, $6)`,
		bk.kid, bk.epoch, bk.seq, a.Provider, a.Currency, int64(a.Amount)); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO totals (provider, account, currency, amount, quantity, tickets, aggregates)
		VALUES ($1, $2, $3, $4::numeric, $5::numeric, $6::numeric, 1)
		ON CONFLICT (provider, account, currency) DO UPDATE SET amount = totals.amount + EXCLUDED.amount,
			quantity = totals.quantity + EXCLUDED.quantity, tickets = totals.tickets + EXCLUDED.tickets, aggregates = totals.aggregates + 1`,
		a.Provider, a.Account, a.Currency, strconv.FormatUint(a.Amount, 10), strconv.FormatUint(a.Quantity, 10), strconv.FormatUint(a.Tickets, 10))
	return err
}

// pgClaim books an aggregate's payword quantity into its claim and its
// total's claimed quantity (claimBolt in PostgreSQL).
func pgClaim(ctx context.Context, tx pgx.Tx, s protocol.StreamID, a *protocol.Aggregate) error {
	kid, epoch, seq := s.KeyID[:], int64(s.Epoch), int64(a.Seq)
	if _, err := tx.Exec(ctx, `INSERT INTO paywords (provider, account, meter, quantity, records, claimed) VALUES ($1, $2, $3, 0, 0, $4::numeric)
		ON CONFLICT (provider, account, meter) DO UPDATE SET claimed = paywords.claimed + EXCLUDED.claimed`,
		a.Provider, a.Account, a.Meter, strconv.FormatUint(a.Proven, 10)); err != nil {
		return err
	}
	c, _, err := pgLoadClaim(ctx, tx, claimKey{kid, epoch, seq})
	if err != nil {
		return err
	}
	return pgPutClaim(ctx, tx, claimKey{kid, epoch, seq}, provider.ClaimAggregate(c, a))
}

// pgProve is proveBolt in PostgreSQL.
func pgProve(ctx context.Context, tx pgx.Tx, s protocol.StreamID, rec *provider.Record) error {
	p, u := rec.Progress, rec.Usage
	var lastTo int64
	var word []byte
	err := tx.QueryRow(ctx, "SELECT last_to, last_word FROM payword_chains WHERE device = $1 AND chain = $2 FOR UPDATE",
		u.Device, u.Chain[:]).Scan(&lastTo, &word)
	seen := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	lastWord := rec.Commitment.Anchor
	if seen {
		copy(lastWord[:], word)
	}
	kid, epoch, seq := s.KeyID[:], int64(s.Epoch), int64(p.Aggregate)
	c, _, err := pgLoadClaim(ctx, tx, claimKey{kid, epoch, seq})
	if err != nil {
		return err
	}
	var booked bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM booked WHERE kid = $1 AND epoch = $2 AND seq = $3)", kid, epoch, seq).Scan(&booked); err != nil {
		return err
	}
	c, linked, err := provider.ProveClaim(c, p, u, booked, provider.ChainMark{LastTo: uint32(lastTo), Seen: seen})
	if err != nil {
		return err
	}
	if err := provider.WalkProof(rec.Commitment, &rec.Proof, uint32(lastTo), lastWord); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO payword_chains (device, chain, last_to, last_word) VALUES ($1, $2, $3, $4)
		ON CONFLICT (device, chain) DO UPDATE SET last_to = EXCLUDED.last_to, last_word = EXCLUDED.last_word`,
		u.Device, u.Chain[:], int64(p.To), p.ToWord[:]); err != nil {
		return err
	}
	if !linked {
		return nil
	}
	return pgPutClaim(ctx, tx, claimKey{kid, epoch, seq}, c)
}

// claimKey names an aggregate's payword claim: its stream and seq.
type claimKey struct {
	kid        []byte
	epoch, seq int64
}

func pgLoadClaim(ctx context.Context, tx pgx.Tx, k claimKey) (provider.PaywordClaim, bool, error) {
	kid, epoch, seq := k.kid, k.epoch, k.seq
	var c provider.PaywordClaim
	var claimed, proven string
	var records int64
	err := tx.QueryRow(ctx, `SELECT provider, account, meter, claimed::text, proven::text, records, booked, foreign_records FROM payword_claims
		WHERE kid = $1 AND epoch = $2 AND seq = $3 FOR UPDATE`, kid, epoch, seq).Scan(&c.Provider, &c.Account, &c.Meter, &claimed, &proven, &records, &c.Booked, &c.Foreign)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	if c.Claimed, err = u64(claimed); err != nil {
		return c, false, err
	}
	if c.Proven, err = u64(proven); err != nil {
		return c, false, err
	}
	c.Records = uint64(records)
	return c, true, nil
}

// pgPutClaim writes a claim, or deletes it once it is reconciled.
func pgPutClaim(ctx context.Context, tx pgx.Tx, k claimKey, c provider.PaywordClaim) error {
	kid, epoch, seq := k.kid, k.epoch, k.seq
	if c.Reconciled() {
		_, err := tx.Exec(ctx, "DELETE FROM payword_claims WHERE kid = $1 AND epoch = $2 AND seq = $3", kid, epoch, seq)
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO payword_claims (kid, epoch, seq, provider, account, meter, claimed, proven, records, booked, foreign_records)
		VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8::numeric, $9, $10, $11)
		ON CONFLICT (kid, epoch, seq) DO UPDATE SET provider = EXCLUDED.provider, account = EXCLUDED.account, meter = EXCLUDED.meter,
			claimed = EXCLUDED.claimed, proven = EXCLUDED.proven, records = EXCLUDED.records, booked = EXCLUDED.booked,
			foreign_records = EXCLUDED.foreign_records`,
		kid, epoch, seq, c.Provider, c.Account, c.Meter, strconv.FormatUint(c.Claimed, 10), strconv.FormatUint(c.Proven, 10), int64(c.Records), c.Booked, c.Foreign)
	return err
}

// u64 reads a numeric sum as uint64; a sum past it is an error, not a
// wrapped number.
func u64(s string) (uint64, error) {
	v, ok := new(big.Int).SetString(s, 10)
	if !ok || v.Sign() < 0 || !v.IsUint64() {
		return 0, fmt.Errorf("receiver: sum %s does not fit 64 bits", s)
	}
	return v.Uint64(), nil
}

func (pg *pgBooks) OpenClaims(ctx context.Context) (int, error) {
	var n int
	err := pg.pool.QueryRow(ctx, "SELECT count(*) FROM payword_claims").Scan(&n)
	return n, err
}

// Report reads the books in one repeatable-read transaction.
func (pg *pgBooks) Report(ctx context.Context) (*provider.Report, error) {
	rep := &provider.Report{Gaps: map[string][]uint64{}, High: map[string]uint64{}}
	err := pgx.BeginTxFunc(ctx, pg.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := pgReportTotals(ctx, tx, rep); err != nil {
			return err
		}
		return pgReportStreams(ctx, tx, rep)
	})
	return rep, err
}

// pgReportTotals reads the totals by provider, account and currency.
func pgReportTotals(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT provider, account, currency, amount::text, quantity::text, tickets::text, aggregates
		FROM totals ORDER BY provider, account, currency`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t provider.Total
		var amount, quantity, tickets string
		var aggs int64
		if err := rows.Scan(&t.Provider, &t.Account, &t.Currency, &amount, &quantity, &tickets, &aggs); err != nil {
			return err
		}
		if t.Amount, err = u64(amount); err != nil {
			return err
		}
		if t.Quantity, err = u64(quantity); err != nil {
			return err
		}
		if t.Tickets, err = u64(tickets); err != nil {
			return err
		}
		t.Aggregates = uint64(aggs)
		rep.Totals = append(rep.Totals, t)
	}
	return rows.Err()
}

// pgReportStreams reads the streams, their gaps and highest seqs, and
// the rest of the report (pgReportRest).
func pgReportStreams(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT kid, epoch, gateway, high, count, reset_from, reset_from_last FROM streams ORDER BY kid, epoch`)
	if err != nil {
		return err
	}
	type gapq struct {
		kid         []byte
		epoch, high int64
		i           int
	}
	var need []gapq
	for rows.Next() {
		var kid []byte
		var epoch, high, count int64
		var from, fromLast *int64
		var gateway string
		if err := rows.Scan(&kid, &epoch, &gateway, &high, &count, &from, &fromLast); err != nil {
			return err
		}
		s, _ := protocol.StreamOf(kid, uint64(epoch))
		sr := provider.StreamReport{Stream: s.String(), KeyID: hex.EncodeToString(kid), Epoch: uint64(epoch), Gateway: gateway,
			High: uint64(high), Aggregates: uint64(count), Missing: uint64(high - count)}
		if from != nil && fromLast != nil {
			sr.ResetFrom = &provider.Reset{Epoch: uint64(*from), LastSeq: uint64(*fromLast)}
		}
		if sr.Missing > 0 {
			need = append(need, gapq{kid, epoch, high, len(rep.Streams)})
		}
		rep.Streams = append(rep.Streams, sr)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, q := range need {
		rows, err := tx.Query(ctx, `SELECT s FROM generate_series(1::bigint, $3) s
			WHERE NOT EXISTS (SELECT 1 FROM booked WHERE kid = $1 AND epoch = $2 AND seq = s) ORDER BY s LIMIT $4`,
			q.kid, q.epoch, q.high, provider.MaxGaps)
		if err != nil {
			return err
		}
		for rows.Next() {
			var g int64
			if err := rows.Scan(&g); err != nil {
				return err
			}
			rep.Streams[q.i].Gaps = append(rep.Streams[q.i].Gaps, uint64(g))
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	for _, sr := range rep.Streams {
		rep.High[sr.Stream] = sr.High
		rep.Gaps[sr.Stream] = sr.Gaps
	}
	return pgReportRest(ctx, tx, rep)
}

// pgReportRest reads the credits, double redemptions, quarantine and held
// records.
func pgReportRest(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	for _, read := range []func(context.Context, pgx.Tx, *provider.Report) error{pgReportCredits, pgReportDoubles,
		pgReportQuarantine, pgReportPaywords, pgReportClaims, pgReportHeld, pgReportRestores} {
		if err := read(ctx, tx, rep); err != nil {
			return err
		}
	}
	return nil
}

// pgReportCredits reads the credits by account, currency and kind into rep.
func pgReportCredits(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT account, currency, kind, amount::text, count FROM credits ORDER BY account, currency, kind`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c provider.CreditTotal
		var amount string
		var n int64
		if err := rows.Scan(&c.Account, &c.Currency, &c.Kind, &amount, &n); err != nil {
			return err
		}
		if c.Amount, err = u64(amount); err != nil {
			return err
		}
		c.Count = uint64(n)
		rep.Credits = append(rep.Credits, c)
	}
	return rows.Err()
}

// pgReportDoubles reads the vouchers credited twice into rep.
func pgReportDoubles(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT d.voucher, d.kid, d.epoch, d.seq, d.first_kid, d.first_epoch, d.first_seq, b.bytes,
		r.kid, r.epoch, r.seq, r.amount, r.reason
		FROM doubles d JOIN booked b ON b.kid = d.kid AND b.epoch = d.epoch AND b.seq = d.seq
		LEFT JOIN resolutions r ON r.voucher = d.voucher ORDER BY d.voucher, d.kid, d.epoch, d.seq`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var d provider.DoubleRedemption
		var kid, fk, b, rk []byte
		var epoch, seq, fe, fs int64
		var re, rs, ra *int64
		var reason *string
		if err := rows.Scan(&d.Voucher, &kid, &epoch, &seq, &fk, &fe, &fs, &b, &rk, &re, &rs, &ra, &reason); err != nil {
			return err
		}
		second, _ := protocol.StreamOf(kid, uint64(epoch))
		first, _ := protocol.StreamOf(fk, uint64(fe))
		d.First, d.Second = first.Key(uint64(fs)), second.Key(uint64(seq))
		if _, c, err := strict.DecodeCredit(b); err == nil {
			d.Account, d.Amount, d.Currency, d.Gateway = c.Account, c.Amount, c.Currency, c.Gateway
		}
		if rk != nil && re != nil && rs != nil && ra != nil && reason != nil {
			rst, _ := protocol.StreamOf(rk, uint64(*re))
			d.Resolved = &provider.Resolution{Adjustment: rst.Key(uint64(*rs)), Amount: *ra, Reason: *reason}
		}
		rep.Doubles = append(rep.Doubles, d)
	}
	return rows.Err()
}

// pgReportQuarantine reads the tickets gateways hold into rep.
func pgReportQuarantine(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT bytes FROM quarantine ORDER BY gateway, device, ticket`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return err
		}
		if _, h, err := strict.DecodeHold(b); err == nil {
			rep.Quarantine = append(rep.Quarantine, h)
		}
	}
	return rows.Err()
}

// pgReportPaywords reads the payword totals into rep.
func pgReportPaywords(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT provider, account, meter, quantity::text, records, claimed::text, unattested::text FROM paywords
		ORDER BY provider, account, meter`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var p provider.PaywordTotal
		var q, cl, un string
		var n int64
		if err := rows.Scan(&p.Provider, &p.Account, &p.Meter, &q, &n, &cl, &un); err != nil {
			return err
		}
		if p.Quantity, err = u64(q); err != nil {
			return err
		}
		if p.Claimed, err = u64(cl); err != nil {
			return err
		}
		if p.Unattested, err = u64(un); err != nil {
			return err
		}
		p.Records = uint64(n)
		rep.Paywords = append(rep.Paywords, p)
	}
	return rows.Err()
}

// pgReportClaims reads the payword claims not reconciled into rep.
func pgReportClaims(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT kid, epoch, seq, provider, account, meter, claimed::text, proven::text, records, booked, foreign_records
		FROM payword_claims ORDER BY kid, epoch, seq`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c provider.PaywordClaim
		var kid []byte
		var epoch, seq, records int64
		var cl, pr string
		if err := rows.Scan(&kid, &epoch, &seq, &c.Provider, &c.Account, &c.Meter, &cl, &pr, &records, &c.Booked, &c.Foreign); err != nil {
			return err
		}
		if c.Claimed, err = u64(cl); err != nil {
			return err
		}
		if c.Proven, err = u64(pr); err != nil {
			return err
		}
		st, _ := protocol.StreamOf(kid, uint64(epoch))
		c.Stream, c.Records = st.Key(uint64(seq)), uint64(records)
		rep.PaywordClaims = append(rep.PaywordClaims, c)
	}
	return rows.Err()
}

// pgReportHeld reads the records held, not booked into rep.
func pgReportHeld(ctx context.Context, tx pgx.Tx, rep *provider.Report) error {
	rows, err := tx.Query(ctx, `SELECT kid, epoch, seq, reason, at_ms, bytes FROM held ORDER BY kid, epoch, seq`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var kid, b []byte
		var epoch, seq, at int64
		var h provider.Held
		if err := rows.Scan(&kid, &epoch, &seq, &h.Reason, &at, &b); err != nil {
			return err
		}
		s, _ := protocol.StreamOf(kid, uint64(epoch))
		h.Stream, h.Seq, h.At, h.Bytes = s.String(), uint64(seq), at, hex.EncodeToString(b)
		provider.HeldFields(&h, b)
		rep.Held = append(rep.Held, h)
	}
	return rows.Err()
}

// Ping asks the database.
func (pg *pgBooks) Ping(ctx context.Context) error { return pg.pool.Ping(ctx) }
