// Package jsrecv feeds a provider.Receiver from a NATS JetStream stream:
// the aggregates a gateway's jetstream upstream publishes. An importer of
// package provider links the NATS client only if it imports this package.
package jsrecv

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/provider"
)

// Config names the stream and the durable consumer.
type Config struct {
	URL     string // nats://host:port[,…]
	Stream  string // the gateways' stream, e.g. FARTHING
	Durable string // the consumer's name: receivers on one name share the work
	Log     *slog.Logger
	// BookTimeout bounds how long one record may wait for the books;
	// default 30s (the consumer's AckWait).
	BookTimeout time.Duration
}

// Run books aggregates from a durable pull consumer until ctx ends.
// Several receivers on the same durable share the work; each message is
// acknowledged once booked, so a receiver that dies leaves its messages
// to the others.
func Run(ctx context.Context, r *provider.Receiver, cfg Config) error {
	if cfg.BookTimeout == 0 {
		cfg.BookTimeout = 30 * time.Second
	}
	nc, err := nats.Connect(cfg.URL, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := consumer(ctx, nc, cfg)
	if err != nil || cons == nil {
		return err
	}
	// While the books cannot commit (a database that is down), nothing is
	// acknowledged: each message comes back after a delay that doubles
	// from 100 ms to 10 s, so a down database is not hammered.
	var failing atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		bctx, cancel := context.WithTimeout(ctx, cfg.BookTimeout)
		bk, err := r.Accept(bctx, m.Data())
		cancel()
		provider.LogOutcome(cfg.Log, "subject", m.Subject(), bk, err)
		switch {
		case err == nil:
			m.Ack()
			failing.Store(0)
		case provider.Refused(err):
			m.Term() // a refusal is final; a held aggregate is kept in the books
			failing.Store(0)
		default:
			n := failing.Add(1)
			m.NakWithDelay(min(100*time.Millisecond<<min(n, 7), 10*time.Second))
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// consumer creates (or finds) the durable consumer, waiting for the
// stream to exist; nil without an error when ctx ended first.
func consumer(ctx context.Context, nc *nats.Conn, cfg Config) (jetstream.Consumer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	for {
		cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{Durable: cfg.Durable,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.BookTimeout, MaxAckPending: 1000})
		if err == nil {
			return cons, nil
		}
		cfg.Log.Warn("waiting for the stream", "stream", cfg.Stream, "error", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}
