package mqtt

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/gateway/entrance"
)

// ClientConfig configures the gateway as a client of an external broker.
type ClientConfig struct {
	Broker             string // tcp://host:port
	ClientID           string
	Username, Password string
	Topics             Topics
	// Handle takes every message devices publish on their ticket topics
	// (and voucher topics, when Vouchers).
	Handle entrance.Handler
	// Concurrency is the number of shards that handle tickets at once;
	// default 256. A device's tickets always go to the same shard, in the
	// order the broker delivered them.
	Concurrency int
	Log         *slog.Logger
	Event       func(event string)
	// Subscribed, if set, is called after every subscription the broker
	// confirmed (the first one makes the gateway ready).
	Subscribed func()
	// Lost, if set, is called when the connection to the broker is lost.
	Lost func()
	// Vouchers subscribes to the devices' voucher topics too.
	Vouchers bool
	// ReceiptQoS is the QoS receipts are published at (see the package
	// documentation); 0 or 1.
	ReceiptQoS byte
}

// RunClient connects to the broker, subscribes to every device's ticket
// topic at QoS 1 with a persistent session, and handles tickets until ctx
// ends. Each ticket is acknowledged to the broker only after the handler
// returned (its effects are durable), so the broker re-delivers a ticket the
// gateway did not finish.
//
// Ordering: paho delivers in order (OrderMatters on) to a callback that
// only routes the message to a shard chosen by its device id; each shard
// handles its queue in order. So one device's tickets are committed in the
// order they arrived while devices on other shards proceed in parallel. A
// full shard queue blocks the callback: that is the back-pressure on the
// broker. The callback never waits on a paho token, which would deadlock.
// RunClient waits for the shards to drain before returning.
func RunClient(ctx context.Context, cfg ClientConfig) error {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Event == nil {
		cfg.Event = func(string) {}
	}
	type job struct {
		c   paho.Client
		msg paho.Message
		dev string
	}
	type started struct {
		job
		reply entrance.Reply
	}
	shards := make([]chan job, cfg.Concurrency)
	var workers sync.WaitGroup
	for i := range shards {
		shards[i] = make(chan job, 64)
		// Each shard starts its tickets in order and answers them in the
		// same order, up to cap(answers) in flight, so a device's tickets
		// share group commits instead of waiting for one each.
		answers := make(chan started, 32)
		// QoS 1 receipts' tokens, waited for in order by one goroutine per
		// shard (not one per receipt), to log a receipt the broker refused.
		receipts := make(chan receiptToken, 256)
		workers.Add(3)
		go func(q chan job) {
			defer workers.Done()
			defer close(answers)
			for j := range q {
				answers <- started{j, cfg.Handle(ctx, entrance.Message{Device: j.dev, Payload: j.msg.Payload(), Transport: "mqtt"})}
			}
		}(shards[i])
		go func() {
			defer workers.Done()
			for rt := range receipts {
				if rt.t.WaitTimeout(30*time.Second) && rt.t.Error() != nil {
					cfg.Log.Warn("receipt publish failed", "device", rt.dev, "error", rt.t.Error())
				}
			}
		}()
		go func() {
			defer workers.Done()
			defer close(receipts)
			for j := range answers {
				ans := j.reply()
				if ans.Receipt != nil {
					t := j.c.Publish(cfg.Topics.Receipt(j.dev), cfg.ReceiptQoS, false, ans.Receipt)
					if cfg.ReceiptQoS > 0 {
						receipts <- receiptToken{j.dev, t}
					}
				}
				if ans.Final() {
					j.msg.Ack() // unacknowledged, the broker delivers it again
				}
			}
		}()
	}
	var closing sync.RWMutex // held for reading while routing; closing the shards takes it
	closed := false
	handler := func(c paho.Client, msg paho.Message) {
		dev := cfg.Topics.DeviceOf(msg.Topic())
		if dev == "" && cfg.Vouchers {
			dev = cfg.Topics.DeviceOfVoucher(msg.Topic())
		}
		if dev == "" {
			cfg.Event("bad_topic")
			msg.Ack()
			return
		}
		closing.RLock()
		defer closing.RUnlock()
		if closed {
			return // not acknowledged: the broker delivers it again
		}
		h := fnv.New32a()
		h.Write([]byte(dev))
		shards[h.Sum32()%uint32(len(shards))] <- job{c, msg, dev}
	}
	var client paho.Client
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).SetKeepAlive(30 * time.Second).
		SetMessageChannelDepth(uint(cfg.Concurrency))
	opts.SetOnConnectHandler(func(c paho.Client) {
		cfg.Event("connected")
		filters := map[string]byte{cfg.Topics.TicketFilter(): 1}
		if cfg.Vouchers {
			filters[cfg.Topics.VoucherFilter()] = 1
		}
		t := c.SubscribeMultiple(filters, handler)
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
		if cfg.Lost != nil {
			cfg.Lost()
		}
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
	client.Disconnect(1000) // no new deliveries
	closing.Lock()
	closed = true
	for _, q := range shards {
		close(q)
	}
	closing.Unlock()
	workers.Wait()
	return nil
}

// receiptToken is a QoS 1 receipt on its way to the broker.
type receiptToken struct {
	dev string
	t   paho.Token
}
