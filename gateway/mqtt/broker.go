package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BrokerConfig configures the embedded broker.
type BrokerConfig struct {
	Listen string // TCP address
	Topics Topics
	Handle Handler
	// HandleVoucher, if set, redeems a voucher a device published on its
	// voucher topic and returns the receipt to publish; it returns once the
	// redemption is durable (or refused).
	HandleVoucher func(ctx context.Context, device string, payload []byte) []byte
	// Authenticate checks a device's user name (its id) and password.
	Authenticate func(device string, password []byte) bool
	Log          *slog.Logger
	// Event, if set, counts transport events ("auth_refused", "acl_refused").
	Event func(event string)
	// OnTakeover, if set, is told when a device logs in while its session
	// is still connected from another address (a sign of a clone).
	OnTakeover func(device, oldRemote, newRemote string)
	// Inflight bounds the tickets of one client that are checked and
	// queued but not yet answered; default 64. Beyond it the broker stops
	// reading from the client until the oldest is answered.
	Inflight int
	// SessionExpiry bounds how long a disconnected persistent session is
	// kept; default 1h.
	SessionExpiry time.Duration
	// ReceiptQoS is the QoS receipts are published at (see the package
	// documentation); 0 or 1.
	ReceiptQoS byte
	// Door bounds the TCP front door: CONNECT deadline, connection cap,
	// per-source connection rate.
	Door DoorConfig
}

// Broker is the embedded MQTT broker. Devices authenticate with their id
// as user name; the ACL lets each publish only its own ticket topic and
// subscribe only its own receipt topic; everything else is refused. The
// same ACL holds for a Will: a CONNECT whose Will topic the device may not
// publish to is refused (retained messages are off). A device's session is
// always kept under its own id, whatever client id it sent, so no device
// can take over another's session or disconnect it.
//
// A client's tickets are pipelined: the broker reads the next while the
// ones before it wait for their group commit, and answers them (receipt,
// then PUBACK) in the order they arrived, each only after its commit.
type Broker struct {
	cfg  BrokerConfig
	srv  *mochi.Server
	door *door

	mu      sync.Mutex
	pipes   map[*mochi.Client]*pipe
	closed  bool
	writers sync.WaitGroup // one per pipe
}

// pipe holds one client's tickets between Handler and their answers. It
// has a goroutine only while it has tickets to answer, so idle clients
// cost none.
type pipe struct {
	slots   chan struct{} // one per ticket not yet answered: the bound
	mu      sync.Mutex
	queue   []answer
	running bool // a writer goroutine is answering
	closed  bool
}

type answer struct {
	id    uint16 // packet id, for the PUBACK
	ack   bool   // send the PUBACK
	dev   string
	reply Reply
}

// NewBroker builds the broker; Serve starts it.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Event == nil {
		cfg.Event = func(string) {}
	}
	if cfg.Inflight <= 0 {
		cfg.Inflight = 64
	}
	if cfg.SessionExpiry <= 0 {
		cfg.SessionExpiry = time.Hour
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacket
	caps.RetainAvailable = 0
	// Per-client memory: a device is sent receipts only, at most one per
	// ticket in flight, so its queue of pending writes need not be mochi's
	// default 8192 (64 KB per client); its packets are small, so are its
	// buffers; and a session it left does not live forever.
	caps.MaximumClientWritesPending = int32(2 * cfg.Inflight)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	srv := mochi.New(&mochi.Options{InlineClient: true, Capabilities: caps, Logger: cfg.Log.With("component", "mqtt-broker"),
		ClientNetReadBufferSize: 1024, ClientNetWriteBufferSize: 1024})
	b := &Broker{cfg: cfg, srv: srv, pipes: map[*mochi.Client]*pipe{}}
	if err := srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, err
	}
	b.door = newDoor("tcp", cfg.Listen, cfg.Door, cfg.Event, cfg.Log)
	if err := srv.AddListener(b.door); err != nil {
		return nil, fmt.Errorf("mqtt: listen %s: %w", cfg.Listen, err)
	}
	return b, nil
}

// Disconnect closes the connection of the client with this id (a device
// id: clients connect under their device's id), telling an MQTT 5 client
// why (administrative action). It reports whether such a client was connected.
func (b *Broker) Disconnect(id string) bool {
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Closed() {
		return false
	}
	if cl.Properties.ProtocolVersion >= 5 {
		b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction) // sends the reason, then closes
		return true
	}
	cl.Stop(packets.ErrAdministrativeAction) // MQTT 3: a server sends no DISCONNECT, it closes
	return true
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.door.Address() }

// Serving reports whether the broker's listener is accepting connections
// now: false before Serve, after it, and while accepting fails (for
// example while the process is out of file descriptors).
func (b *Broker) Serving() bool { return b.door.Serving() }

// Serve runs the broker until ctx ends, then closes it: clients are
// disconnected, and every ticket already queued is committed and answered
// (where its client is still there) before Serve returns.
func (b *Broker) Serve(ctx context.Context) error {
	if err := b.srv.Serve(); err != nil {
		return err
	}
	<-ctx.Done()
	err := b.srv.Close()
	b.mu.Lock()
	b.closed = true
	for cl, p := range b.pipes {
		p.close()
		delete(b.pipes, cl)
	}
	b.mu.Unlock()
	b.writers.Wait()
	return err
}

// pipe returns cl's pipe; nil once the broker is closing.
func (b *Broker) pipe(cl *mochi.Client) *pipe {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.pipes[cl]; p != nil || b.closed {
		return p
	}
	p := &pipe{slots: make(chan struct{}, b.cfg.Inflight)}
	b.pipes[cl] = p
	return p
}

// push queues a ticket's answer in arrival order, starting the pipe's
// writer if it is not running. It blocks while the client has Inflight
// tickets unanswered. It returns false, queuing nothing, once the pipe is
// closed.
func (b *Broker) push(cl *mochi.Client, p *pipe, a answer) bool {
	p.slots <- struct{}{}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.slots
		return false
	}
	p.queue = append(p.queue, a)
	if !p.running {
		p.running = true
		b.writers.Add(1)
		go b.write(cl, p)
	}
	return true
}

// write answers the pipe's tickets in order until none is left.
func (b *Broker) write(cl *mochi.Client, p *pipe) {
	defer b.writers.Done()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.running = false
			p.queue = nil // an idle client keeps no buffer
			p.mu.Unlock()
			return
		}
		a := p.queue[0]
		p.queue[0] = answer{}
		p.queue = p.queue[1:]
		p.mu.Unlock()
		b.answer(cl, a)
		<-p.slots
	}
}

// answer waits for one ticket's outcome, publishes its receipt and
// acknowledges it. A ticket told "retry later" is acknowledged too: the
// device keeps it and sends it again.
//
// At QoS 0 the receipt (if the device subscribed to its receipt topic) and
// the PUBACK go out in one write on the client's connection, under the
// client's lock as mochi's own writes: no broker routing, no hop through
// the client's write goroutine, one system call per ticket. At QoS 1 the
// receipt goes through the broker, which tracks it until the device acks.
func (b *Broker) answer(cl *mochi.Client, a answer) {
	receipt, _ := a.reply()
	var buf bytes.Buffer
	topic := b.cfg.Topics.Receipt(a.dev)
	if receipt != nil {
		if b.cfg.ReceiptQoS > 0 {
			if err := b.srv.Publish(topic, receipt, false, b.cfg.ReceiptQoS); err != nil {
				b.cfg.Log.Warn("receipt publish failed", "device", a.dev, "error", err)
			}
		} else if _, ok := cl.State.Subscriptions.Get(topic); ok {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: receipt,
				ProtocolVersion: cl.Properties.ProtocolVersion}
			if err := pk.PublishEncode(&buf); err != nil {
				b.cfg.Log.Warn("receipt encoding failed", "device", a.dev, "error", err)
				buf.Reset()
			}
		}
	}
	if a.ack {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: a.id, ProtocolVersion: cl.Properties.ProtocolVersion}
		pk.PubackEncode(&buf)
	}
	if buf.Len() == 0 || cl.Closed() || cl.Net.Conn == nil {
		// A client that is gone sends the ticket again and is answered
		// "duplicate" with the original receipt.
		return
	}
	cl.Lock()
	_, _ = buf.WriteTo(cl.Net.Conn)
	cl.Unlock()
}

// close makes the pipe refuse new tickets; those queued are still
// answered (committed first, whether or not the client is there).
func (p *pipe) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

type hook struct {
	mochi.HookBase
	b *Broker
}

func (h *hook) ID() string { return "farthing" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish, mochi.OnDisconnect}, []byte{b})
}

// errWillRefused ends a connection whose Will the ACL does not allow.
var errWillRefused = errors.New("mqtt: will topic not allowed")

// OnConnect runs once the CONNECT packet is read: the connection is past
// its CONNECT deadline, and its Will is held to the publish ACL — a device
// may leave a Will only on a topic it may publish to itself.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	if dc, ok := cl.Net.Conn.(*doorConn); ok {
		dc.connected.Store(true)
	}
	if pk.Connect.WillFlag && !h.allowed(string(pk.Connect.Username), pk.Connect.WillTopic, true) {
		h.b.cfg.Event("will_refused")
		h.b.cfg.Log.Info("mqtt connection refused: will topic not allowed", "user", string(pk.Connect.Username),
			"topic", pk.Connect.WillTopic, "remote", cl.Net.Remote)
		code := packets.ErrNotAuthorized
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrBadUsernameOrPassword // 3.1.1's only refusal: 0x05 not authorized
		}
		h.b.srv.SendConnack(cl, code, false, nil)
		return errWillRefused
	}
	return nil
}

// OnConnectAuthenticate checks the device's password, then keeps its
// session under its own id: a client id other than the device id is
// replaced (and counted), so a device cannot take over, or disconnect,
// another device's session by sending that device's client id.
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	dev := string(pk.Connect.Username)
	if !h.b.cfg.Authenticate(dev, pk.Connect.Password) {
		h.b.cfg.Event("auth_refused")
		h.b.cfg.Log.Info("mqtt login refused", "user", dev, "remote", cl.Net.Remote)
		return false
	}
	if old, ok := h.b.srv.Clients.Get(dev); ok && !old.Closed() && h.b.cfg.OnTakeover != nil &&
		remoteHost(old.Net.Remote) != remoteHost(cl.Net.Remote) {
		h.b.cfg.OnTakeover(dev, old.Net.Remote, cl.Net.Remote)
	}
	if cl.ID != dev {
		h.b.cfg.Event("client_id_replaced")
		h.b.cfg.Log.Debug("mqtt client id replaced by the device id", "device", dev, "client_id", cl.ID)
		cl.ID = dev
		if cl.Properties.ProtocolVersion >= 5 {
			cl.Properties.Props.AssignedClientID = dev
		}
	}
	return true
}

// remoteHost is the host part of a remote address (the port of a device
// that reconnects changes; its address does not).
func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// OnACLCheck allows a device its own two topics and nothing else.
func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	dev := string(cl.Properties.Username)
	if h.allowed(dev, topic, write) {
		return true
	}
	h.b.cfg.Event("acl_refused")
	h.b.cfg.Log.Info("mqtt topic refused", "device", dev, "topic", topic, "write", write)
	return false
}

// allowed is the ACL: a device writes its ticket topic (and its voucher
// topic, when vouchers are taken), reads its receipt topic, and nothing
// else.
func (h *hook) allowed(dev, topic string, write bool) bool {
	t := h.b.cfg.Topics
	if write && h.b.cfg.HandleVoucher != nil && topic == t.Voucher(dev) {
		return true
	}
	return (write && topic == t.Ticket(dev)) || (!write && topic == t.Receipt(dev))
}

// OnPublish checks a ticket and queues it for commit on the client's read
// goroutine, so the client's tickets keep their order, and hands it to the
// client's pipe, which answers it once committed. The broker neither
// acknowledges nor routes the ticket itself.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // our own receipts
	}
	dev := string(cl.Properties.Username)
	if h.b.cfg.HandleVoucher != nil && pk.TopicName == h.b.cfg.Topics.Voucher(dev) {
		// Vouchers are rare: redeemed here, on the client's read goroutine,
		// and answered in turn with its tickets.
		receipt := h.b.cfg.HandleVoucher(context.Background(), dev, pk.Payload)
		reply := func() ([]byte, bool) { return receipt, true }
		a := answer{id: pk.PacketID, dev: dev, reply: reply, ack: pk.FixedHeader.Qos == 1}
		if p := h.b.pipe(cl); p == nil || !h.b.push(cl, p, a) {
			h.b.answer(cl, a)
		}
		return pk, packets.ErrRejectPacket
	}
	if pk.FixedHeader.Qos != 1 {
		// QoS 0 has no acknowledgement to hold back, and QoS 2 keeps
		// mochi's own flow: both are answered here, in turn.
		h.b.answer(cl, answer{dev: dev, reply: h.b.cfg.Handle(context.Background(), dev, pk.Payload)})
		return pk, packets.CodeSuccessIgnore
	}
	p := h.b.pipe(cl)
	if p == nil {
		return pk, packets.ErrRejectPacket // closing: not acknowledged, so sent again
	}
	a := answer{id: pk.PacketID, dev: dev, reply: h.b.cfg.Handle(context.Background(), dev, pk.Payload), ack: true}
	if !h.b.push(cl, p, a) {
		h.b.answer(cl, a) // the client left meanwhile: answer here
	}
	return pk, packets.ErrRejectPacket
}

// OnDisconnect ends the client's pipe; its writer answers what is queued.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	h.b.mu.Lock()
	p := h.b.pipes[cl]
	delete(h.b.pipes, cl)
	h.b.mu.Unlock()
	if p != nil {
		p.close()
	}
}
