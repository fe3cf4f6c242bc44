package mqttsink

import (
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/protocol"
)

// CommandsConfig configures a gateway's MQTT command subscription.
type CommandsConfig struct {
	Broker             string // tcp://host:port
	ClientID           string // stable: the broker keeps the session (and the commands queued in it) under it
	Username, Password string
	// Prefix is the topic prefix; default protocol.DefaultTopicPrefix.
	Prefix  string
	Targets []protocol.CommandTarget
}

// Commands subscribes at QoS 1 in a persistent session to each target's
// commands and hands each to handle, one at a time in the order they
// come; a command is acknowledged (PUBACK) only once handle returned nil,
// so one the gateway could not answer comes again with the session. A
// command not valid yet is held and handed again every 30 s. Commands
// returns when ctx ends.
func Commands(ctx context.Context, cfg CommandsConfig, handle upstream.CommandHandler, log func(string, error)) error {
	topics := protocol.Topics{Prefix: cfg.Prefix}
	msgs := make(chan paho.Message, 64)
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).SetUsername(cfg.Username).
		SetPassword(cfg.Password).SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).SetAutoAckDisabled(true).
		SetOrderMatters(true)
	filters := map[string]byte{}
	for _, t := range cfg.Targets {
		filters[topics.Commands(t)] = 1
	}
	opts.SetOnConnectHandler(func(c paho.Client) {
		// Subscribed again on every connection: a broker that lost the
		// session still delivers from now on.
		c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
			select {
			case msgs <- m:
			case <-ctx.Done():
			}
		})
	})
	c := paho.NewClient(opts)
	c.Connect()
	defer c.Disconnect(250)
	var held []paho.Message // not valid yet: handed again every 30 s
	retry := time.NewTicker(30 * time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			if !answer(ctx, m, handle, log) {
				held = append(held, m)
			}
		case <-retry.C:
			again := held
			held = nil
			for _, m := range again {
				if !answer(ctx, m, handle, log) {
					held = append(held, m)
				}
			}
		}
	}
}

// answer hands m to handle, acknowledging it once answered; false if it
// must be handed again later.
func answer(ctx context.Context, m paho.Message, handle upstream.CommandHandler, log func(string, error)) bool {
	for attempt := 0; ; attempt++ {
		err := handle(ctx, m.Payload())
		switch {
		case err == nil:
			m.Ack()
			return true
		case errors.Is(err, upstream.ErrNotYet):
			return false
		case ctx.Err() != nil:
			return false
		}
		log(fmt.Sprintf("mqtt commands: answering a command failed (attempt %d); trying again", attempt+1), err)
		t := time.NewTimer(min(time.Duration(attempt+1)*time.Second, 10*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}
