// Package mqttsink delivers aggregates to a provider's MQTT broker with
// paho: QoS 1, a persistent session, one topic per provider and gateway,
// success on PUBACK.
package mqttsink

import (
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/protocol"
)

// Config configures the sink.
type Config struct {
	Broker             string // tcp://host:port
	ClientID           string // stable: the broker keeps the session under it
	Username, Password string
	// TopicPrefix: aggregates go to PREFIX/PROVIDER/GATEWAY; default
	// farthing/v1/aggregates.
	TopicPrefix string
}

// Sink is a connected MQTT sink.
type Sink struct {
	cfg Config
	c   paho.Client
}

// New connects in the background; Send fails until connected.
func New(cfg Config) *Sink {
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = protocol.Topics{}.Aggregates()
	}
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.ClientID).SetUsername(cfg.Username).
		SetPassword(cfg.Password).SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).SetOrderMatters(false)
	s := &Sink{cfg: cfg, c: paho.NewClient(opts)}
	s.c.Connect()
	return s
}

// Topic is where an aggregate of provider from gateway is published.
func (s *Sink) Topic(provider, gateway string) string {
	return s.cfg.TopicPrefix + "/" + provider + "/" + gateway
}

// Send publishes at QoS 1 and returns once the broker acknowledged.
func (s *Sink) Send(ctx context.Context, a upstream.Outgoing) error {
	if !s.c.IsConnectionOpen() {
		return fmt.Errorf("mqttsink: not connected to %s", s.cfg.Broker)
	}
	t := s.c.Publish(s.Topic(a.Provider, a.Gateway), 1, false, a.Bytes)
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects.
func (s *Sink) Close() error {
	s.c.Disconnect(250)
	return nil
}
