// Package jetstreamsink delivers aggregates to a NATS JetStream stream.
// Each message carries Nats-Msg-Id = the idempotency key, so JetStream's
// own de-duplication drops resends inside the stream's duplicate window;
// receivers deduplicate on the key beyond it. A JetStream ack confirms.
package jetstreamsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/gateway/upstream"
)

// Config configures the sink.
type Config struct {
	URL string // nats://host:port[,nats://…] (a cluster's seeds)
	// Stream is the stream name; default FARTHING.
	Stream string
	// SubjectPrefix: aggregates go to PREFIX.PROVIDER.GATEWAY; default
	// farthing.aggregates.
	SubjectPrefix string
	// Create makes (or updates) the stream on connect, with Replicas and a
	// duplicate window of DupWindow (default 24h).
	Create    bool
	Replicas  int
	DupWindow time.Duration
	Name      string // the connection's name, for the server's logs
}

// Sink publishes to JetStream.
type Sink struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
}

// New connects (retrying in the background) and, with Create, makes the
// stream.
func New(ctx context.Context, cfg Config) (*Sink, error) {
	if cfg.Stream == "" {
		cfg.Stream = "FARTHING"
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = "farthing.aggregates"
	}
	if cfg.DupWindow <= 0 {
		cfg.DupWindow = 24 * time.Hour
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	nc, err := nats.Connect(cfg.URL, nats.Name(cfg.Name), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("jetstreamsink: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s := &Sink{cfg: cfg, nc: nc, js: js}
	if cfg.Create {
		if err := s.ensureStream(ctx); err != nil {
			// Not fatal: the server may be down; Send tries again.
			return s, nil
		}
	}
	return s, nil
}

// StreamConfig is the stream the sink creates.
func (s *Sink) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: s.cfg.Stream, Subjects: []string{s.cfg.SubjectPrefix + ".>"},
		Duplicates: s.cfg.DupWindow, Replicas: s.cfg.Replicas, Storage: jetstream.FileStorage}
}

func (s *Sink) ensureStream(ctx context.Context) error {
	_, err := s.js.CreateOrUpdateStream(ctx, s.StreamConfig())
	return err
}

// Subject is where an aggregate of provider from gateway goes.
func (s *Sink) Subject(provider, gateway string) string {
	return s.cfg.SubjectPrefix + "." + provider + "." + gateway
}

// Send publishes and returns once JetStream acknowledged (a duplicate ack
// counts: the stream already holds it).
func (s *Sink) Send(ctx context.Context, a upstream.Outgoing) error {
	_, err := s.js.Publish(ctx, s.Subject(a.Provider, a.Gateway), a.Bytes, jetstream.WithMsgID(a.Key))
	if errors.Is(err, jetstream.ErrNoStreamResponse) && s.cfg.Create {
		if cerr := s.ensureStream(ctx); cerr == nil {
			_, err = s.js.Publish(ctx, s.Subject(a.Provider, a.Gateway), a.Bytes, jetstream.WithMsgID(a.Key))
		}
	}
	return err
}

// Close drains the connection.
func (s *Sink) Close() error {
	s.nc.Close()
	return nil
}
