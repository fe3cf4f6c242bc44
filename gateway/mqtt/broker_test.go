package mqtt_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/gateway/mqtt"
)

// fakeHandler answers every ticket with "receipt:" and its payload, after
// a gate, and records what it was handed.
type fakeHandler struct {
	mu   sync.Mutex
	seen []string // device/payload
	gate chan struct{}
}

func (f *fakeHandler) handle(_ context.Context, device string, payload []byte) mqtt.Reply {
	f.mu.Lock()
	f.seen = append(f.seen, device+"/"+string(payload))
	f.mu.Unlock()
	return func() ([]byte, bool) {
		<-f.gate
		return []byte("receipt:" + string(payload)), true
	}
}

func startBroker(t *testing.T, h *fakeHandler, door mqtt.DoorConfig) (*mqtt.Broker, *counter) {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ev := &counter{m: map[string]int{}}
	b, err := mqtt.NewBroker(mqtt.BrokerConfig{Listen: addr, Handle: h.handle, Door: door, Event: ev.add,
		Authenticate: func(dev string, pw []byte) bool { return string(pw) == "pw-"+dev },
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for !b.Serving() {
		time.Sleep(5 * time.Millisecond)
	}
	return b, ev
}

type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(e string) { c.mu.Lock(); c.m[e]++; c.mu.Unlock() }
func (c *counter) get(e string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[e]
}

func client(t *testing.T, b *mqtt.Broker, user, clientID string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetUsername(user).SetPassword("pw-" + user).
		SetClientID(clientID).SetAutoReconnect(false).SetProtocolVersion(4)
	c := paho.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(5 * time.Second)
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(50) })
	}
	return c, tok.Error()
}

// A ticket on the device's own topic goes to the handler; the PUBACK
// waits for the Reply (the commit), and the receipt arrives on the
// device's receipt topic.
func TestBrokerHandsTicketsToTheHandler(t *testing.T) {
	h := &fakeHandler{gate: make(chan struct{})}
	b, _ := startBroker(t, h, mqtt.DoorConfig{})
	c, err := client(t, b, "dev-1", "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	receipts := make(chan string, 4)
	c.Subscribe(mqtt.Topics{}.Receipt("dev-1"), 0, func(_ paho.Client, m paho.Message) { receipts <- string(m.Payload()) }).Wait()
	tok := c.Publish(mqtt.Topics{}.Ticket("dev-1"), 1, false, "t1")
	if tok.WaitTimeout(300 * time.Millisecond) {
		t.Fatal("PUBACK before the handler's Reply returned")
	}
	close(h.gate)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("no PUBACK after the Reply: %v", tok.Error())
	}
	select {
	case r := <-receipts:
		if r != "receipt:t1" {
			t.Fatalf("receipt %q", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no receipt")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) != 1 || h.seen[0] != "dev-1/t1" {
		t.Fatalf("handler saw %v", h.seen)
	}
}

// The ACL, the login and the front door, each counted.
func TestBrokerRefusals(t *testing.T) {
	h := &fakeHandler{gate: make(chan struct{})}
	close(h.gate)
	b, ev := startBroker(t, h, mqtt.DoorConfig{ConnectTimeout: 200 * time.Millisecond})
	if _, err := client(t, b, "dev-1", "x"); err != nil {
		t.Fatal(err)
	}
	if ev.get("client_id_replaced") != 1 {
		t.Error("a foreign client id was not replaced and counted")
	}
	bad := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetUsername("dev-2").SetPassword("wrong").SetProtocolVersion(4))
	if tok := bad.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Error("a wrong password was let in")
	}
	c, _ := client(t, b, "dev-3", "dev-3")
	c.Publish(mqtt.Topics{}.Ticket("dev-1"), 1, false, "not mine").WaitTimeout(time.Second)
	w := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://"+b.Addr()).SetUsername("dev-4").SetPassword("pw-dev-4").
		SetProtocolVersion(4).SetWill(mqtt.Topics{}.Receipt("dev-1"), "forged", 0, false))
	if tok := w.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() == nil || !strings.Contains(strings.ToLower(tok.Error().Error()), "not authorized") {
		t.Errorf("a Will on another device's topic: %v; want not authorized", tok.Error())
	}
	raw, _ := net.Dial("tcp", b.Addr())
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("a connection without CONNECT was not closed at its deadline: %v", err)
	}
	raw.Close()
	time.Sleep(50 * time.Millisecond)
	for _, e := range []string{"auth_refused", "acl_refused", "will_refused", "connect_timeout"} {
		if ev.get(e) == 0 {
			t.Errorf("%s not counted", e)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) != 0 {
		t.Errorf("refused publishes reached the handler: %v", h.seen)
	}
}
