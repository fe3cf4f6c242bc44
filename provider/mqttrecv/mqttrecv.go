// Package mqttrecv feeds a provider.Receiver from an MQTT broker: the
// aggregates a gateway's mqtt upstream publishes. An importer of package
// provider links paho only if it imports this package.
package mqttrecv

import (
	"context"
	"log/slog"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// Config says where to subscribe.
type Config struct {
	Broker             string // tcp://host:port
	ClientID           string // keep it stable: the session is persistent
	Filter             string // default farthing/v1/aggregates/# (protocol.Topics)
	Username, Password string
	Log                *slog.Logger
	// BookTimeout bounds how long one record may wait for the books;
	// default 30s. One not booked in time is not acknowledged and comes
	// again.
	BookTimeout time.Duration
}

// Run subscribes with a persistent session (QoS 1) and books what
// arrives until ctx ends; a message is acknowledged once booked (or
// refused for good).
func Run(ctx context.Context, r *provider.Receiver, cfg Config) error {
	if cfg.Filter == "" {
		cfg.Filter = protocol.Topics{}.AggregateFilter()
	}
	if cfg.BookTimeout == 0 {
		cfg.BookTimeout = 30 * time.Second
	}
	handle := func(_ paho.Client, m paho.Message) {
		bctx, cancel := context.WithTimeout(ctx, cfg.BookTimeout)
		bk, err := r.Accept(bctx, m.Payload())
		cancel()
		provider.LogOutcome(cfg.Log, "topic", m.Topic(), bk, err)
		if err != nil && !provider.Refused(err) {
			return // not acknowledged: it comes again
		}
		m.Ack()
	}
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(time.Second)
	opts.SetOnConnectHandler(func(c paho.Client) { c.Subscribe(cfg.Filter, 1, handle) })
	c := paho.NewClient(opts)
	c.Connect()
	<-ctx.Done()
	c.Disconnect(250)
	return nil
}
