package mqtt_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/mqtt"
	"github.com/farthing-iot/farthing/protocol"
)

// fakeHandler answers every ticket with "receipt:" and its payload, after
// a gate, and records what it was handed.
type fakeHandler struct {
	mu   sync.Mutex
	seen []string // device/payload
	gate chan struct{}
}

func (f *fakeHandler) handle(_ context.Context, m entrance.Message) entrance.Reply {
	f.mu.Lock()
	f.seen = append(f.seen, m.Device+"/"+string(m.Payload))
	f.mu.Unlock()
	return func() entrance.Answer {
		<-f.gate
		return entrance.Answer{Receipt: []byte("receipt:" + string(m.Payload)), Status: protocol.StatusAccepted}
	}
}

func startBroker(t *testing.T, h *fakeHandler, door mqtt.DoorConfig) (*mqtt.Broker, *counter) {
	t.Helper()
	return startBrokerWith(t, h, func(c *mqtt.BrokerConfig) { c.Door = door })
}

func startBrokerWith(t *testing.T, h *fakeHandler, tune func(*mqtt.BrokerConfig)) (*mqtt.Broker, *counter) {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ev := &counter{m: map[string]int{}}
	cfg := mqtt.BrokerConfig{Listen: addr, Handle: h.handle, Event: ev.add,
		Authenticate: func(dev string, pw []byte) bool { return string(pw) == "pw-"+dev },
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil))}
	tune(&cfg)
	b, err := mqtt.NewBroker(cfg)
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

// rawConn is an MQTT client written with mochi-mqtt's packet codec, for
// what paho (MQTT 3.1.1) cannot do: MQTT 5, QoS 2, reading raw answers.
type rawConn struct {
	t       *testing.T
	c       net.Conn
	r       *bufio.Reader
	version byte
}

func dialRaw(t *testing.T, b *mqtt.Broker, version byte, user, clientID string, clean bool, props packets.Properties) (*rawConn, packets.Packet) {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c), version: version}
	name := []byte("MQTT")
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version, Properties: props,
		Connect: packets.ConnectParams{ProtocolName: name, Clean: clean, Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte("pw-" + user)}})
	return rc, rc.expect(packets.Connack)
}

func (rc *rawConn) send(pk packets.Packet) {
	rc.t.Helper()
	var buf bytes.Buffer
	pk.ProtocolVersion = rc.version
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	if _, err := rc.c.Write(buf.Bytes()); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads the next packet; ok is false when the connection ended.
func (rc *rawConn) next() (packets.Packet, bool) {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var pk packets.Packet
	hb, err := rc.r.ReadByte()
	if err != nil {
		return pk, false
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		rc.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		rc.t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		rc.t.Fatal(err)
	}
	pk.FixedHeader.Remaining, pk.ProtocolVersion = n, rc.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	return pk, true
}

func (rc *rawConn) expect(typ byte) packets.Packet {
	rc.t.Helper()
	pk, ok := rc.next()
	if !ok || pk.FixedHeader.Type != typ {
		rc.t.Fatalf("want packet type %d, got %d (connection open: %v)", typ, pk.FixedHeader.Type, ok)
	}
	return pk
}

func (rc *rawConn) subscribe(topic string, qos byte) {
	rc.t.Helper()
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic, Qos: qos}}})
	if ack := rc.expect(packets.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != qos {
		rc.t.Fatalf("suback %v, want [%d]", ack.ReasonCodes, qos)
	}
}

// MQTT 5: the CONNACK says what the broker does not do and which client
// id it kept; a publish on another device's topic is answered "not
// authorized"; an administrative disconnect says so.
func TestBrokerMQTT5(t *testing.T) {
	h := &fakeHandler{gate: make(chan struct{})}
	close(h.gate)
	b, ev := startBroker(t, h, mqtt.DoorConfig{})
	rc, ack := dialRaw(t, b, 5, "dev-5", "something-else", true, packets.Properties{})
	if ack.ReasonCode != 0 || ack.Properties.AssignedClientID != "dev-5" || !ack.Properties.RetainAvailableFlag ||
		ack.Properties.RetainAvailable != 0 || ack.Properties.MaximumPacketSize != mqtt.MaxPacket {
		t.Fatalf("connack %+v", ack.Properties)
	}
	rc.subscribe(mqtt.Topics{}.Receipt("dev-5"), 0)
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7,
		TopicName: mqtt.Topics{}.Ticket("dev-6"), Payload: []byte("not mine")})
	if p := rc.expect(packets.Puback); p.PacketID != 7 || p.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("puback %d reason %#x, want 7 and not authorized", p.PacketID, p.ReasonCode)
	}
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 8,
		TopicName: mqtt.Topics{}.Ticket("dev-5"), Payload: []byte("t1")})
	if p := rc.expect(packets.Publish); string(p.Payload) != "receipt:t1" {
		t.Fatalf("receipt %q", p.Payload)
	}
	if p := rc.expect(packets.Puback); p.PacketID != 8 || p.ReasonCode != 0 {
		t.Fatalf("puback %d reason %#x", p.PacketID, p.ReasonCode)
	}
	if !b.Disconnect("dev-5") {
		t.Fatal("Disconnect found no client")
	}
	if p := rc.expect(packets.Disconnect); p.ReasonCode != packets.ErrAdministrativeAction.Code {
		t.Fatalf("disconnect reason %#x", p.ReasonCode)
	}
	if _, open := rc.next(); open {
		t.Fatal("the connection stayed open after DISCONNECT")
	}
	if ev.get("acl_refused") != 1 || ev.get("client_id_replaced") != 1 {
		t.Fatalf("events %v", ev.m)
	}
}

// QoS 2 tickets keep their flow: PUBREC after the commit, PUBCOMP for the
// PUBREL. Receipts at QoS 1 wait in a kept session for their PUBACK and
// come again, marked DUP, when the device reconnects.
func TestBrokerQoS2TicketsAndQoS1Receipts(t *testing.T) {
	h := &fakeHandler{gate: make(chan struct{})}
	close(h.gate)
	b, _ := startBrokerWith(t, h, func(c *mqtt.BrokerConfig) { c.ReceiptQoS = 1 })
	rc, _ := dialRaw(t, b, 4, "dev-7", "dev-7", false, packets.Properties{})
	rc.subscribe(mqtt.Topics{}.Receipt("dev-7"), 1)
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 3,
		TopicName: mqtt.Topics{}.Ticket("dev-7"), Payload: []byte("t2")})
	r := rc.expect(packets.Publish)
	if string(r.Payload) != "receipt:t2" || r.FixedHeader.Qos != 1 || r.PacketID == 0 || r.FixedHeader.Dup {
		t.Fatalf("receipt %+v", r.FixedHeader)
	}
	if p := rc.expect(packets.Pubrec); p.PacketID != 3 {
		t.Fatalf("pubrec for %d", p.PacketID)
	}
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 3})
	if p := rc.expect(packets.Pubcomp); p.PacketID != 3 {
		t.Fatalf("pubcomp for %d", p.PacketID)
	}
	rc.c.Close() // the receipt is not acknowledged
	rc2, ack := dialRaw(t, b, 4, "dev-7", "dev-7", false, packets.Properties{})
	if !ack.SessionPresent {
		t.Fatal("the kept session is not present")
	}
	again := rc2.expect(packets.Publish)
	if string(again.Payload) != "receipt:t2" || !again.FixedHeader.Dup || again.PacketID != r.PacketID {
		t.Fatalf("resent receipt %q dup %v id %d, want id %d", again.Payload, again.FixedHeader.Dup, again.PacketID, r.PacketID)
	}
	rc2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: again.PacketID})
	rc2.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	rc2.expect(packets.Pingresp) // packets are handled in order: the PUBACK was
	rc2.c.Close()
	rc3, ack := dialRaw(t, b, 4, "dev-7", "dev-7", false, packets.Properties{})
	if !ack.SessionPresent {
		t.Fatal("the kept session is not present")
	}
	rc3.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := rc3.r.ReadByte(); err == nil {
		t.Fatal("an acknowledged receipt came again")
	}
}

// An idle connection costs one goroutine, its reader: the workers and
// the writers that answered its tickets are shared or gone.
func TestBrokerIdleConnectionIsOneGoroutine(t *testing.T) {
	h := &fakeHandler{gate: make(chan struct{})}
	close(h.gate)
	b, _ := startBroker(t, h, mqtt.DoorConfig{})
	const n = 50
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("idle-%d", i)
		rc, _ := dialRaw(t, b, 4, dev, dev, true, packets.Properties{})
		rc.subscribe(mqtt.Topics{}.Receipt(dev), 0)
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1,
			TopicName: mqtt.Topics{}.Ticket(dev), Payload: []byte("t")})
		rc.expect(packets.Publish)
		rc.expect(packets.Puback)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine()-before > n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // the writers linger a second
	}
	if d := runtime.NumGoroutine() - before; d != n {
		t.Fatalf("%d idle connections hold %d goroutines, want %d", n, d, n)
	}
}
