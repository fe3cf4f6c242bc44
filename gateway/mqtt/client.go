package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ClientConfig configures the gateway as a client of an external broker.
type ClientConfig struct {
	Broker             string // tcp://host:port
	ClientID           string
	Username, Password string
	Topics             Topics
	Handle             Handler
	// Concurrency bounds tickets handled at once; default 512.
	Concurrency int
	Log         *slog.Logger
	Event       func(event string)
	// Subscribed, if set, is called after every subscription the broker
	// confirmed (the first one makes the gateway ready).
	Subscribed func()
}

// RunClient connects to the broker, subscribes to every device's ticket
// topic at QoS 1 with a persistent session, and handles tickets until ctx
// ends. Each ticket is acknowledged to the broker only after the handler
// returned (its effects are durable), so the broker re-delivers a ticket the
// gateway did not finish. Handlers run concurrently (paho's OrderMatters is
// off); the wait for a free slot is the back-pressure on the broker. It
// waits for handlers in progress before returning.
func RunClient(ctx context.Context, cfg ClientConfig) error {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 512
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Event == nil {
		cfg.Event = func(string) {}
	}
	slots := make(chan struct{}, cfg.Concurrency)
	var inflight sync.WaitGroup
	var client paho.Client
	handler := func(c paho.Client, msg paho.Message) {
		dev := cfg.Topics.DeviceOf(msg.Topic())
		if dev == "" {
			cfg.Event("bad_topic")
			msg.Ack()
			return
		}
		slots <- struct{}{}
		inflight.Add(1)
		defer func() { <-slots; inflight.Done() }()
		receipt, ack := cfg.Handle(ctx, dev, msg.Payload())
		if receipt != nil {
			t := c.Publish(cfg.Topics.Receipt(dev), 1, false, receipt)
			go func() {
				if t.WaitTimeout(30*time.Second) && t.Error() != nil {
					cfg.Log.Warn("receipt publish failed", "device", dev, "error", t.Error())
				}
			}()
		}
		if ack {
			msg.Ack() // unacknowledged, the broker delivers it again
		}
	}
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(false).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).SetKeepAlive(30 * time.Second).
		SetMessageChannelDepth(uint(cfg.Concurrency))
	opts.SetOnConnectHandler(func(c paho.Client) {
		cfg.Event("connected")
		t := c.Subscribe(cfg.Topics.TicketFilter(), 1, handler)
		go func() {
			switch {
			case !t.WaitTimeout(10 * time.Second):
				cfg.Log.Error("subscribe timed out", "filter", cfg.Topics.TicketFilter())
			case t.Error() != nil:
				cfg.Log.Error("subscribe failed", "filter", cfg.Topics.TicketFilter(), "error", t.Error())
			case cfg.Subscribed != nil:
				cfg.Subscribed()
			}
		}()
		cfg.Log.Info("connected to broker", "broker", cfg.Broker, "filter", cfg.Topics.TicketFilter())
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		cfg.Event("connection_lost")
		cfg.Log.Warn("broker connection lost", "error", err)
	})
	client = paho.NewClient(opts)
	t := client.Connect()
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fmt.Errorf("mqtt: connect %s: %w", cfg.Broker, err)
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	inflight.Wait()
	client.Disconnect(1000)
	return nil
}
