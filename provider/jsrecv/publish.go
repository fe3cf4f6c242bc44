package jsrecv

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/protocol"
)

// Publisher puts the control channel's commands in a JetStream stream
// (protocol.DefaultCommandStream, subjects under
// protocol.DefaultCommandSubjectPrefix), which it makes; each gateway's
// durable consumer takes its targets' commands from there, in order, and
// acknowledges each once answered. The command's id is its Nats-Msg-Id.
type Publisher struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   string
	prefix   string
	replicas int
}

// NewPublisher connects (retrying in the background).
func NewPublisher(url string, replicas int) (*Publisher, error) {
	nc, err := nats.Connect(url, nats.Name("farthing-fleet"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Publisher{nc: nc, js: js, stream: protocol.DefaultCommandStream, prefix: protocol.DefaultCommandSubjectPrefix, replicas: max(replicas, 1)}, nil
}

// PublishCommand appends a command to the stream (making the stream if
// it is missing) and returns once JetStream acknowledged it.
func (p *Publisher) PublishCommand(ctx context.Context, t protocol.CommandTarget, id string, b []byte) error {
	_, err := p.js.Publish(ctx, t.Subject(p.prefix), b, jetstream.WithMsgID(id))
	if err != nil {
		if _, serr := p.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: p.stream, Subjects: []string{p.prefix + ".>"},
			Replicas: p.replicas, Storage: jetstream.FileStorage, Duplicates: 24 * time.Hour}); serr == nil {
			_, err = p.js.Publish(ctx, t.Subject(p.prefix), b, jetstream.WithMsgID(id))
		}
	}
	return err
}

// Close closes the connection.
func (p *Publisher) Close() { p.nc.Close() }
