package pgbooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider"
)

func (pg *pgBooks) PushCommand(ctx context.Context, target, id string, sign func(seq uint64) ([]byte, error)) (uint64, error) {
	var seq uint64
	err := pgx.BeginFunc(ctx, pg.pool, func(tx pgx.Tx) error {
		// One push per target at a time: the seq is the next.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", "fleet:"+target); err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM fleet_commands WHERE target = $1", target).Scan(&last); err != nil {
			return err
		}
		seq = uint64(last) + 1
		b, err := sign(seq)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO fleet_commands (target, seq, id, bytes) VALUES ($1, $2, $3, $4)", target, int64(seq), id, b)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return fmt.Errorf("%w: %s", provider.ErrCommandID, id)
		}
		return err
	})
	return seq, err
}

func (pg *pgBooks) CommandsAfter(ctx context.Context, target string, after uint64, limit int) ([][]byte, error) {
	rows, err := pg.pool.Query(ctx, "SELECT bytes FROM fleet_commands WHERE target = $1 AND seq > $2 ORDER BY seq LIMIT $3", target, int64(after), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[[]byte])
}

func (pg *pgBooks) CommandLog(ctx context.Context) ([][]byte, error) {
	rows, err := pg.pool.Query(ctx, "SELECT bytes FROM fleet_commands ORDER BY target, seq")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[[]byte])
}

func (pg *pgBooks) Acks(ctx context.Context) ([]protocol.CommandAck, error) {
	rows, err := pg.pool.Query(ctx, "SELECT bytes FROM fleet_acks ORDER BY command, gateway")
	if err != nil {
		return nil, err
	}
	bs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, err
	}
	out := make([]protocol.CommandAck, 0, len(bs))
	for _, b := range bs {
		_, a, err := strict.DecodeCommandAck(b)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// ack keeps the gateway's latest acknowledgement of the command: a later
// one of the same stream replaces it, but never an application by a
// refusal.
func (bk *pgBooking) ack() error {
	a := bk.rec.Ack
	_, err := bk.tx.Exec(bk.ctx, `INSERT INTO fleet_acks (command, gateway, epoch, seq, refused, bytes) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (command, gateway) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq, refused = EXCLUDED.refused, bytes = EXCLUDED.bytes
		WHERE (fleet_acks.refused OR NOT EXCLUDED.refused) AND NOT (fleet_acks.epoch = EXCLUDED.epoch AND fleet_acks.seq > EXCLUDED.seq)`,
		a.Command, a.Gateway, int64(a.Epoch), int64(a.Seq), a.Refused, bk.b)
	return err
}
