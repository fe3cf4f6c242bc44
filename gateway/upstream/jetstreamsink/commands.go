package jetstreamsink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/protocol"
)

// CommandsConfig configures a gateway's JetStream command consumers.
type CommandsConfig struct {
	URL     string // nats://host:port[,…]
	Stream  string // default protocol.DefaultCommandStream
	Prefix  string // subject prefix; default protocol.DefaultCommandSubjectPrefix
	Gateway string // the gateway id: its consumers are named after it
	// Targets are the sequences to follow: one durable consumer each,
	// filtered on the target's subject, one message in flight, so each
	// target's commands come in their order, again until acknowledged
	// (10 s after a delivery not acknowledged: a gateway that died
	// answering gets it again soon after it is back).
	Targets []protocol.CommandTarget
	Name    string // the connection's name
}

// Commands follows the provider's commands on JetStream: each is handed
// to handle, and acknowledged to JetStream only once handle returned nil
// (the gateway's answer is durable). A command not valid yet
// (upstream.ErrNotYet) or one handle failed on comes again after a delay.
// Commands returns when ctx ends.
func Commands(ctx context.Context, cfg CommandsConfig, handle upstream.CommandHandler, log func(msg string, err error)) error {
	if cfg.Stream == "" {
		cfg.Stream = protocol.DefaultCommandStream
	}
	nc, err := nats.Connect(cfg.URL, nats.Name(cfg.Name), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return fmt.Errorf("jetstream commands: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, t := range cfg.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			follow(ctx, js, cfg, t, handle, log)
		}()
	}
	wg.Wait()
	return nil
}

// ConsumerName is the durable consumer of gateway's commands of target.
func ConsumerName(gateway string, t protocol.CommandTarget) string {
	r := strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")
	kind := "gw"
	if t.Group {
		kind = "group"
	}
	return r.Replace("farthing_" + gateway + "_" + kind + "_" + t.Name)
}

// follow consumes one target's commands until ctx ends, making its
// consumer (again) whenever it is missing.
func follow(ctx context.Context, js jetstream.JetStream, cfg CommandsConfig, t protocol.CommandTarget, handle upstream.CommandHandler, log func(string, error)) {
	var cons jetstream.Consumer
	fresh := false
	for ctx.Err() == nil {
		if cons == nil {
			if !fresh {
				// Made anew at every start, delivering the stream from its
				// beginning: the gateway's books, not the consumer, say
				// what was applied (a state file restored from a backup is
				// behind the consumer); what they hold is answered as a
				// duplicate, without a write.
				if err := js.DeleteConsumer(ctx, cfg.Stream, ConsumerName(cfg.Gateway, t)); err != nil &&
					!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
					log("jetstream commands: the consumer could not be made anew; trying again", err)
					sleep(ctx, 2*time.Second)
					continue
				}
				fresh = true
			}
			var err error
			cons, err = js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{Durable: ConsumerName(cfg.Gateway, t),
				FilterSubject: t.Subject(cfg.Prefix), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
				MaxAckPending: 1, AckWait: 10 * time.Second})
			if err != nil {
				log("jetstream commands: no consumer yet (is the stream there?); trying again", err)
				sleep(ctx, 2*time.Second)
				continue
			}
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				cons = nil
			}
			if ctx.Err() == nil {
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			deliver(ctx, msg, handle, log)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				cons = nil
			}
			sleep(ctx, time.Second)
		}
	}
}

// deliver hands one message to handle and acknowledges it once the
// answer is durable, or has it come again later.
func deliver(ctx context.Context, msg jetstream.Msg, handle upstream.CommandHandler, log func(string, error)) {
	err := handle(ctx, msg.Data())
	switch {
	case err == nil:
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if aerr := msg.DoubleAck(actx); aerr != nil {
			log("jetstream commands: acknowledging failed; the command comes again and is answered as a duplicate", aerr)
		}
		cancel()
	case errors.Is(err, upstream.ErrNotYet):
		msg.NakWithDelay(30 * time.Second)
	default:
		log("jetstream commands: the command comes again", err)
		msg.NakWithDelay(2 * time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
