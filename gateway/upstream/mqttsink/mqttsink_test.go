package mqttsink_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/farthing-iot/farthing/gateway/upstream"
	"github.com/farthing-iot/farthing/gateway/upstream/mqttsink"
)

// The sink publishes each aggregate at QoS 1 on PREFIX/PROVIDER/GATEWAY
// and confirms once the broker acknowledged; without a broker it fails.
func TestSinkPublishesToTheProvidersTopic(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv.AddHook(new(auth.AllowHook), nil)
	srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr}))
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	defer stop()

	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("provider"))
	if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(50)
	got := make(chan paho.Message, 2)
	sub.Subscribe("farthing/v1/aggregates/#", 1, func(_ paho.Client, m paho.Message) { got <- m }).Wait()

	s := mqttsink.New(mqttsink.Config{Broker: "tcp://" + addr, ClientID: "gw-1-provider"})
	defer s.Close()
	a := upstream.Outgoing{Seq: 1, Gateway: "gw-1", Provider: "stadtwerk", Key: "k/1", Bytes: []byte("\xd2agg")}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.Send(ctx, a)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Send: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case m := <-got:
		if m.Topic() != "farthing/v1/aggregates/stadtwerk/gw-1" || string(m.Payload()) != string(a.Bytes) {
			t.Fatalf("got %s %q", m.Topic(), m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the provider got nothing")
	}
	stop()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Send(ctx, a); err == nil {
		t.Fatal("Send without a broker reported success")
	}
}
