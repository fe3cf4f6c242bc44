package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BrokerConfig configures the embedded broker.
type BrokerConfig struct {
	Listen string // TCP address
	Topics Topics
	Handle Handler
	// Authenticate checks a device's user name (its id) and password.
	Authenticate func(device string, password []byte) bool
	Log          *slog.Logger
	// Event, if set, counts transport events ("auth_refused", "acl_refused").
	Event func(event string)
}

// Broker is the embedded MQTT broker. Devices authenticate with their id
// as user name; the ACL lets each publish only its own ticket topic and
// subscribe only its own receipt topic; everything else is refused.
type Broker struct {
	cfg BrokerConfig
	srv *mochi.Server
}

// NewBroker builds the broker; Serve starts it.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Event == nil {
		cfg.Event = func(string) {}
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacket
	caps.RetainAvailable = 0
	srv := mochi.New(&mochi.Options{InlineClient: true, Capabilities: caps, Logger: cfg.Log.With("component", "mqtt-broker")})
	b := &Broker{cfg: cfg, srv: srv}
	if err := srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Listen})); err != nil {
		return nil, fmt.Errorf("mqtt: listen %s: %w", cfg.Listen, err)
	}
	return b, nil
}

// Serve runs the broker until ctx ends, then closes it: clients are
// disconnected and hooks in progress finish first.
func (b *Broker) Serve(ctx context.Context) error {
	if err := b.srv.Serve(); err != nil {
		return err
	}
	<-ctx.Done()
	return b.srv.Close()
}

type hook struct {
	mochi.HookBase
	b *Broker
}

func (h *hook) ID() string { return "farthing" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish}, []byte{b})
}

func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	ok := h.b.cfg.Authenticate(string(pk.Connect.Username), pk.Connect.Password)
	if !ok {
		h.b.cfg.Event("auth_refused")
		h.b.cfg.Log.Info("mqtt login refused", "user", string(pk.Connect.Username), "remote", cl.Net.Remote)
	}
	return ok
}

// OnACLCheck allows a device its own two topics and nothing else.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	dev := string(cl.Properties.Username)
	t := h.b.cfg.Topics
	if (write && topic == t.Ticket(dev)) || (!write && topic == t.Receipt(dev)) {
		return true
	}
	h.b.cfg.Event("acl_refused")
	h.b.cfg.Log.Info("mqtt topic refused", "device", dev, "topic", topic, "write", write)
	return false
}

// OnPublish handles a ticket before the broker acknowledges it: the
// handler commits it, the receipt is published, and the ticket itself is
// acknowledged but not routed anywhere.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // our own receipts
	}
	dev := string(cl.Properties.Username)
	// The embedded broker acknowledges every ticket; a device told "retry
	// later" keeps the ticket and sends it again.
	receipt, _ := h.b.cfg.Handle(context.Background(), dev, pk.Payload)
	if receipt != nil {
		if err := h.b.srv.Publish(h.b.cfg.Topics.Receipt(dev), receipt, false, 1); err != nil {
			h.b.cfg.Log.Warn("receipt publish failed", "device", dev, "error", err)
		}
	}
	return pk, packets.CodeSuccessIgnore
}
