package mqttrecv

import (
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/protocol"
)

// Publisher publishes the control channel's commands at QoS 1 on
// protocol.Topics.Commands; a gateway's persistent session keeps them
// while it is away. A broker keeps nothing for a gateway that never
// subscribed, so the receiver publishes again what some gateway has not
// answered (Lossy, provider.Receiver.Republish).
type Publisher struct {
	c      paho.Client
	topics protocol.Topics
}

// NewPublisher connects in the background.
func NewPublisher(broker, clientID, username, password string) *Publisher {
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(clientID).SetUsername(username).SetPassword(password).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second)
	p := &Publisher{c: paho.NewClient(opts)}
	p.c.Connect()
	return p
}

// Lossy says that commands published here may be lost to a gateway.
func (p *Publisher) Lossy() bool { return true }

// PublishCommand publishes at QoS 1 and returns once the broker
// acknowledged.
func (p *Publisher) PublishCommand(ctx context.Context, t protocol.CommandTarget, _ string, b []byte) error {
	if !p.c.IsConnectionOpen() {
		return fmt.Errorf("mqtt commands: not connected")
	}
	tok := p.c.Publish(p.topics.Commands(t), 1, false, b)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects.
func (p *Publisher) Close() { p.c.Disconnect(250) }
