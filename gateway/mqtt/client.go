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
	r := &clientRun{cfg: cfg, shards: make([]chan clientJob, cfg.Concurrency)}
	for i := range r.shards {
		r.shards[i] = make(chan clientJob, 64)
		r.startShard(ctx, r.shards[i])
	}
	client := paho.NewClient(r.options())
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
	r.closing.Lock()
	r.closed = true
	for _, q := range r.shards {
		close(q)
	}
	r.closing.Unlock()
	r.workers.Wait()
	return nil
}

// clientRun is one RunClient: its shards and the workers that own them.
type clientRun struct {
	cfg     ClientConfig
	shards  []chan clientJob
	workers sync.WaitGroup // three per shard; RunClient waits for them
	closing sync.RWMutex   // held for reading while routing; closing the shards takes it
	closed  bool
}

// clientJob is a message delivered by the broker, for its device's shard.
type clientJob struct {
	c   paho.Client
	msg paho.Message
	dev string
}

// clientStarted is a message handed to the pipeline, waiting for its reply.
type clientStarted struct {
	clientJob
	reply entrance.Reply
}

// startShard starts a shard's workers: one starts its messages in order
// and one answers them in the same order, up to cap(answers) in flight, so
// a device's messages share group commits instead of waiting for one
// each; a third waits for QoS 1 receipts' tokens in order (not one
// goroutine per receipt), to log a receipt the broker refused.
func (r *clientRun) startShard(ctx context.Context, q chan clientJob) {
	cfg := r.cfg
	answers := make(chan clientStarted, 32)
	receipts := make(chan receiptToken, 256)
	r.workers.Add(3)
	go func() {
		defer r.workers.Done()
		defer close(answers)
		for j := range q {
			answers <- clientStarted{j, cfg.Handle(ctx, entrance.Message{Device: j.dev, Payload: j.msg.Payload(), Transport: "mqtt"})}
		}
	}()
	go func() {
		defer r.workers.Done()
		for rt := range receipts {
			if rt.t.WaitTimeout(30*time.Second) && rt.t.Error() != nil {
				cfg.Log.Warn("receipt publish failed", "device", rt.dev, "error", rt.t.Error())
			}
		}
	}()
	go func() {
		defer r.workers.Done()
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

// route hands a delivered message to its device's shard; a message on
// no device's topic is counted and acknowledged, one that arrives while
// the run closes is left unacknowledged (the broker delivers it again).
func (r *clientRun) route(c paho.Client, msg paho.Message) {
	dev := r.cfg.Topics.DeviceOf(msg.Topic())
	if dev == "" && r.cfg.Vouchers {
		dev = r.cfg.Topics.DeviceOfVoucher(msg.Topic())
	}
	if dev == "" {
		r.cfg.Event("bad_topic")
		msg.Ack()
		return
	}
	r.closing.RLock()
	defer r.closing.RUnlock()
	if r.closed {
		return
	}
	h := fnv.New32a()
	h.Write([]byte(dev))
	r.shards[h.Sum32()%uint32(len(r.shards))] <- clientJob{c, msg, dev}
}

// options are the paho client's: a persistent session, manual acks after
// commit, ordered delivery, and a subscription on every (re)connect.
func (r *clientRun) options() *paho.ClientOptions {
	cfg := r.cfg
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).SetPassword(cfg.Password).
		SetCleanSession(false).SetAutoAckDisabled(true).SetOrderMatters(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).SetKeepAlive(30 * time.Second).
		SetMessageChannelDepth(uint(cfg.Concurrency))
	opts.SetOnConnectHandler(r.subscribe)
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		cfg.Event("connection_lost")
		if cfg.Lost != nil {
			cfg.Lost()
		}
		cfg.Log.Warn("broker connection lost", "error", err)
	})
	return opts
}

// subscribe subscribes to the ticket (and voucher) topics after a
// connect, and reports the subscription once the broker confirmed it.
func (r *clientRun) subscribe(c paho.Client) {
	cfg := r.cfg
	cfg.Event("connected")
	filters := map[string]byte{cfg.Topics.TicketFilter(): 1}
	if cfg.Vouchers {
		filters[cfg.Topics.VoucherFilter()] = 1
	}
	t := c.SubscribeMultiple(filters, r.route)
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
}

// receiptToken is a QoS 1 receipt on its way to the broker.
type receiptToken struct {
	dev string
	t   paho.Token
}
