package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
	"unsafe"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/farthing-iot/farthing/gateway/entrance"
)

// BrokerConfig configures the embedded broker.
type BrokerConfig struct {
	Listen string // TCP address
	Topics Topics
	// Handle takes every message a device publishes on its ticket topic
	// (and on its voucher topic, when Vouchers).
	Handle entrance.Handler
	// Vouchers lets devices publish vouchers on their voucher topic.
	Vouchers bool
	// Authenticate checks a device's user name (its id) and password.
	Authenticate func(device string, password []byte) bool
	Log          *slog.Logger
	// Event, if set, counts transport events ("auth_refused", "acl_refused").
	Event func(event string)
	// OnTakeover, if set, is told when a device logs in while its session
	// is still connected from another address (a sign of a clone).
	OnTakeover func(device, oldRemote, newRemote string)
	// Inflight bounds the tickets of one client that are read but not yet
	// answered; default 64. Beyond it the broker stops reading from the
	// client until the oldest is answered.
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

// Broker is the embedded MQTT broker: a broker for devices only, built on
// mochi-mqtt's packet codec (MQTT 3.1, 3.1.1 and 5). A device
// authenticates with its id as user name; it may publish on its own ticket
// topic (and its voucher topic) and subscribe to its own receipt topic,
// and nothing else: there is no routing between clients, no retained
// message and no wildcard. A CONNECT whose Will topic the device may not
// publish to is refused; an allowed Will is never published (no one can
// read a device's ticket topic). A device's session is always kept under
// its own id, whatever client id it sent, so no device can take over
// another's session or disconnect it.
//
// Each connection has one goroutine, which reads. A client's tickets are
// pipelined: the reader hands them, in arrival order, to one of
// shardCount workers (always the same one for a client), which passes
// them to Handler in that order — Handler checks a ticket and queues it
// for commit, so a device's tickets share group commits with the rest of
// the fleet — and queues each Reply on the client's pipe. The pipe's
// writer goroutine, which exists only while answers come, waits for each
// commit and answers in arrival order: receipt, then PUBACK, each only
// after its commit. An idle connection costs its reading goroutine (with
// a small stack: the deep work runs on the workers), a small read buffer
// and its session; nothing else.
type Broker struct {
	cfg  BrokerConfig
	door *door

	// shards are the workers' queues: a client's tickets go to one of
	// them, so they reach Handler in the order they arrived.
	shards   []chan start
	stopping chan struct{} // closed when Serve's context ends

	mu       sync.Mutex
	sessions map[string]*session // by device id, connected or kept
	closed   bool
	writers  sync.WaitGroup // one per running pipe writer
}

// shardCount is the number of workers that hand tickets to Handler: as
// many tickets as this are checked at once (Ed25519 ones verified in
// batches of up to this many).
const shardCount = 128

// session is what the broker keeps of a device between its connections:
// its receipt subscription and, at receipt QoS 1, the receipts it has not
// acknowledged.
type session struct {
	dev        string
	subscribed bool
	qos        byte      // the subscription's granted QoS
	conn       *client   // the connection now, or nil
	expires    time.Time // when a kept session ends; zero while connected
	expiry     time.Duration
	nextID     uint16
	unacked    map[uint16][]byte // receipt publishes (QoS 1) waiting for a PUBACK
	unackOrder []uint16
}

// client is one connection of a device.
type client struct {
	b       *Broker
	conn    *doorConn
	r       *bufio.Reader
	dev     string
	remote  string
	version byte
	maxOut  uint32 // the largest packet the client takes (MQTT 5); 0: any
	sess    *session
	receipt string // the device's receipt topic
	// keepalive is the client's keepalive in seconds; every packet moves
	// its read deadline.
	keepalive uint16

	wmu   sync.Mutex // serializes writes to conn
	pipe  pipe
	pk    packets.Packet // the packet being read, on the heap (see loop)
	shard int            // the worker that hands this client's tickets to Handler
}

// pipe holds one client's tickets between Handler and their answers. It
// has a goroutine only while it has tickets (and for writerLinger after).
type pipe struct {
	slots   chan struct{} // one per ticket read and not yet answered: the bound
	wake    chan struct{} // tells a lingering writer that answers came
	mu      sync.Mutex
	queue   []answer
	running bool // a writer goroutine is answering
}

// job is a ticket (or a voucher) read and not yet answered.
type job struct {
	id      uint16 // packet id, for the acknowledgement
	qos     byte   // the publish's QoS: 1 is answered with PUBACK, 2 with PUBREC
	payload []byte
}

// errClosing refuses a connection while the broker closes.
var errClosing = errors.New("mqtt: broker closing")

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
	b := &Broker{cfg: cfg, sessions: map[string]*session{}, stopping: make(chan struct{}), shards: make([]chan start, shardCount)}
	for i := range b.shards {
		b.shards[i] = make(chan start, 256)
	}
	b.door = newDoor(cfg.Listen, cfg.Door, cfg.Event, cfg.Log)
	if err := b.door.listen(); err != nil {
		return nil, fmt.Errorf("mqtt: listen %s: %w", cfg.Listen, err)
	}
	return b, nil
}

// Disconnect closes the connection of the device with this id, telling
// an MQTT 5 client why (administrative action). It reports whether such a
// client was connected.
func (b *Broker) Disconnect(id string) bool {
	b.mu.Lock()
	s := b.sessions[id]
	var c *client
	if s != nil {
		c = s.conn
	}
	b.mu.Unlock()
	if c == nil {
		return false
	}
	c.disconnectWith(packets.ErrAdministrativeAction)
	return true
}

// Online reports whether the device with this id is connected now.
func (b *Broker) Online(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[id]
	return s != nil && s.conn != nil
}

// Connected is the number of devices connected now (kept sessions of
// devices that are away are not counted).
func (b *Broker) Connected() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.sessions {
		if s.conn != nil {
			n++
		}
	}
	return n
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.door.Address() }

// Serving reports whether the broker's listener is accepting connections
// now: false before Serve, after it, and while accepting fails (for
// example while the process is out of file descriptors).
func (b *Broker) Serving() bool { return b.door.Serving() }

// Serve runs the broker until ctx ends, then closes it: clients are
// disconnected, and every ticket already read is committed and answered
// (where its client is still there) before Serve returns.
func (b *Broker) Serve(ctx context.Context) error {
	var workers sync.WaitGroup
	for _, in := range b.shards {
		workers.Add(1)
		go func() { defer workers.Done(); b.work(in) }()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.door.serve(b.serveConn) }()
	go func() { defer wg.Done(); b.expireSessions(ctx) }()
	<-ctx.Done()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stopping)
	b.door.close()
	wg.Wait()
	b.door.conns.Wait() // no reader pushes any more
	for _, in := range b.shards {
		close(in)
	}
	workers.Wait()
	b.writers.Wait()
	return nil
}

// expireSessions drops kept sessions whose expiry passed, once a minute.
func (b *Broker) expireSessions(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.mu.Lock()
			for id, s := range b.sessions {
				if s.conn == nil && now.After(s.expires) {
					delete(b.sessions, id)
				}
			}
			b.mu.Unlock()
		}
	}
}

// serveConn reads a connection's CONNECT and, if it passes, returns the
// connection's read loop, which runs until the connection ends.
func (b *Broker) serveConn(dc *doorConn) (func(), error) {
	c := &client{b: b, conn: dc, r: bufio.NewReaderSize(dc, readBuffer), remote: dc.RemoteAddr().String()}
	pk := new(packets.Packet)
	err := c.read(pk)
	if err == nil && pk.FixedHeader.Type != packets.Connect {
		err = packets.ErrProtocolViolationRequireFirstConnect
	}
	if err == nil {
		err = c.connect(pk)
	}
	if err != nil {
		c.finish()
		return nil, err
	}
	return c.loop, nil
}

// loop reads and handles packets until the connection ends.
//
// Its frame, and read's, are what an idle connection's goroutine holds
// while it waits for the next packet: they stay small (no packet-sized
// locals) so that the collector can shrink the stack the goroutine grew
// while it handled packets to 4 KB.
func (c *client) loop() {
	defer c.finish()
	pk := &c.pk
	for {
		err := c.read(pk)
		if err == nil {
			err = c.dispatch(pk)
		}
		if err != nil {
			c.ended(err)
			return
		}
	}
}

// ended tells the client why its connection ends, where MQTT lets it.
func (c *client) ended(err error) {
	if errors.Is(err, packets.ErrPacketTooLarge) {
		c.disconnectWith(packets.ErrPacketTooLarge)
	}
}

// readBuffer is a connection's read buffer: a ticket and its topic fit.
const readBuffer = 1024

// read reads the next packet into pk, which it clears first.
func (c *client) read(pk *packets.Packet) error {
	clear(unsafe.Slice(pk, 1))
	hb, err := c.r.ReadByte()
	if err != nil {
		return err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return err
	}
	if n+1 > MaxPacket {
		return packets.ErrPacketTooLarge
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = c.version
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return err
	}
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectDecode(body)
	case packets.Publish:
		return pk.PublishDecode(body)
	case packets.Puback:
		return pk.PubackDecode(body)
	case packets.Pubrec:
		return pk.PubrecDecode(body)
	case packets.Pubrel:
		return pk.PubrelDecode(body)
	case packets.Pubcomp:
		return pk.PubcompDecode(body)
	case packets.Subscribe:
		return pk.SubscribeDecode(body)
	case packets.Unsubscribe:
		return pk.UnsubscribeDecode(body)
	case packets.Disconnect:
		return pk.DisconnectDecode(body)
	case packets.Pingreq:
		return nil
	case packets.Auth:
		return pk.AuthDecode(body)
	}
	return fmt.Errorf("mqtt: unexpected packet type %d", pk.FixedHeader.Type)
}

// connect checks the CONNECT and, if it passes, attaches the client to its
// device's session and answers CONNACK.
func (c *client) connect(pk *packets.Packet) error {
	b := c.b
	c.conn.connected.Store(true)
	c.version = pk.ProtocolVersion
	dev, err := c.admit(pk)
	if err != nil {
		return err
	}
	c.dev, c.receipt = dev, b.cfg.Topics.Receipt(dev)
	h := fnv.New32a()
	h.Write(pk.Connect.Username)
	c.shard = int(h.Sum32() % uint32(len(b.shards)))
	props := &packets.Properties{}
	if string(pk.Connect.ClientIdentifier) != dev {
		b.cfg.Event("client_id_replaced")
		b.cfg.Log.Debug("mqtt client id replaced by the device id", "device", dev, "client_id", string(pk.Connect.ClientIdentifier))
		props.AssignedClientID = dev
	}
	if c.version == 5 {
		c.maxOut = pk.Properties.MaximumPacketSize
	}
	c.pipe.slots, c.pipe.wake = make(chan struct{}, b.cfg.Inflight), make(chan struct{}, 1)
	present, old, resend, err := c.takeSession(pk)
	if err != nil {
		return err
	}
	if old != nil {
		if b.cfg.OnTakeover != nil && remoteHost(old.remote) != remoteHost(c.remote) {
			b.cfg.OnTakeover(dev, old.remote, c.remote)
		}
		old.disconnectWith(packets.ErrSessionTakenOver)
	}
	c.brokerLimits(pk, props)
	if err := c.connack(packets.CodeSuccess, present, props); err != nil {
		return err
	}
	c.conn.SetReadDeadline(keepaliveDeadline(pk.Connect.Keepalive))
	c.keepalive = pk.Connect.Keepalive
	if len(resend) > 0 {
		var buf bytes.Buffer
		for _, p := range resend {
			p[0] |= 0x08 // DUP
			buf.Write(p)
		}
		c.write(buf.Bytes())
	}
	return nil
}

// admit checks a CONNECT: its form, its Will's topic and the device's
// credentials; a refusal is answered (CONNACK), counted and logged.
func (c *client) admit(pk *packets.Packet) (string, error) {
	b := c.b
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		c.connack(code, false, nil)
		return "", code
	}
	dev := string(pk.Connect.Username)
	if pk.Connect.WillFlag && !b.allowed(dev, pk.Connect.WillTopic, true) {
		b.cfg.Event("will_refused")
		b.cfg.Log.Info("mqtt connection refused: will topic not allowed", "user", dev, "topic", pk.Connect.WillTopic, "remote", c.remote)
		c.connack(packets.ErrNotAuthorized, false, nil)
		return "", errWillRefused
	}
	if !b.cfg.Authenticate(dev, pk.Connect.Password) {
		b.cfg.Event("auth_refused")
		b.cfg.Log.Info("mqtt login refused", "user", dev, "remote", c.remote)
		c.connack(packets.ErrBadUsernameOrPassword, false, nil)
		return "", packets.ErrBadUsernameOrPassword
	}
	return dev, nil
}

// takeSession gives the connection its device's session: the one kept,
// if the device asked for it and it has not expired (present), or a new
// one. It returns the connection that held the session (to be taken over)
// and the publishes that await an acknowledgement, to send again.
func (c *client) takeSession(pk *packets.Packet) (present bool, old *client, resend [][]byte, err error) {
	b, dev := c.b, c.dev
	expiry := b.cfg.SessionExpiry // MQTT 3: a session that is not clean is kept
	if c.version == 5 {
		expiry = min(time.Duration(pk.Properties.SessionExpiryInterval)*time.Second, b.cfg.SessionExpiry)
	} else if pk.Connect.Clean {
		expiry = 0
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		c.connack(packets.ErrServerUnavailable, false, nil)
		return false, nil, nil, errClosing
	}
	s := b.sessions[dev]
	if s != nil {
		old = s.conn
	}
	present = s != nil && !pk.Connect.Clean && (old != nil || time.Now().Before(s.expires))
	if !present {
		s = &session{dev: dev}
		b.sessions[dev] = s
	}
	s.conn, s.expiry, s.expires = c, expiry, time.Time{}
	c.sess = s
	for _, id := range s.unackOrder {
		resend = append(resend, s.unacked[id])
	}
	b.mu.Unlock()

	return present, old, resend, nil
}

// brokerLimits tells the client what this broker takes: its receive
// maximum, packet size, no topic aliases, retained messages, wildcard,
// shared or identified subscriptions, and a session expiry cut to ours.
func (c *client) brokerLimits(pk *packets.Packet, props *packets.Properties) {
	b := c.b
	props.ReceiveMaximum = uint16(min(b.cfg.Inflight, 65535))
	props.MaximumPacketSize = MaxPacket
	props.TopicAliasMaximum = 0
	props.RetainAvailable, props.RetainAvailableFlag = 0, true
	props.WildcardSubAvailable, props.WildcardSubAvailableFlag = 0, true
	props.SharedSubAvailable, props.SharedSubAvailableFlag = 0, true
	props.SubIDAvailable, props.SubIDAvailableFlag = 0, true
	if c.version == 5 && pk.Properties.SessionExpiryInterval > 0 && time.Duration(pk.Properties.SessionExpiryInterval)*time.Second > b.cfg.SessionExpiry {
		props.SessionExpiryInterval, props.SessionExpiryIntervalFlag = uint32(b.cfg.SessionExpiry/time.Second), true
	}
}

// keepaliveDeadline is the read deadline for a client's keepalive: one and
// a half times it from now, none for 0.
func keepaliveDeadline(keepalive uint16) time.Time {
	if keepalive == 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(keepalive) * 1500 * time.Millisecond)
}

// dispatch handles one packet after CONNECT.
func (c *client) dispatch(pk *packets.Packet) error {
	if c.keepalive > 0 {
		c.conn.SetReadDeadline(keepaliveDeadline(c.keepalive))
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		return c.publish(pk)
	case packets.Puback:
		c.b.mu.Lock()
		if _, ok := c.sess.unacked[pk.PacketID]; ok {
			delete(c.sess.unacked, pk.PacketID)
			c.sess.unackOrder = removeID(c.sess.unackOrder, pk.PacketID)
		}
		c.b.mu.Unlock()
	case packets.Pubrel:
		return c.ack(packets.Pubcomp, pk.PacketID, packets.CodeSuccess)
	case packets.Pubrec, packets.Pubcomp:
		// The broker sends nothing at QoS 2.
	case packets.Subscribe:
		return c.subscribe(pk)
	case packets.Unsubscribe:
		return c.unsubscribe(pk)
	case packets.Pingreq:
		var buf bytes.Buffer
		(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}).PingrespEncode(&buf)
		return c.write(buf.Bytes())
	case packets.Disconnect:
		if c.version == 5 && pk.Properties.SessionExpiryIntervalFlag {
			c.b.mu.Lock()
			c.sess.expiry = min(time.Duration(pk.Properties.SessionExpiryInterval)*time.Second, c.b.cfg.SessionExpiry)
			c.b.mu.Unlock()
		}
		return io.EOF
	case packets.Connect:
		c.disconnectWith(packets.ErrProtocolViolationSecondConnect)
		return packets.ErrProtocolViolationSecondConnect
	default:
		c.disconnectWith(packets.ErrProtocolViolation)
		return packets.ErrProtocolViolation
	}
	return nil
}

// publish takes a PUBLISH: a ticket (or voucher) on the device's own topic
// goes to its pipe; anything else is refused as mochi-mqtt refuses it: a
// QoS 0 publish is dropped, an MQTT 3 client is disconnected, an MQTT 5
// client is answered "not authorized". Each refusal is counted and logged.
func (c *client) publish(pk *packets.Packet) error {
	b := c.b
	if pk.Properties.TopicAliasFlag {
		c.disconnectWith(packets.ErrTopicAliasInvalid) // the broker allows none
		return packets.ErrTopicAliasInvalid
	}
	if code := pk.PublishValidate(0); code != packets.CodeSuccess {
		c.disconnectWith(code)
		return code
	}
	if !b.allowed(c.dev, pk.TopicName, true) {
		b.cfg.Event("acl_refused")
		b.cfg.Log.Info("mqtt topic refused", "device", c.dev, "topic", pk.TopicName, "write", true)
		switch {
		case pk.FixedHeader.Qos == 0:
			return nil
		case c.version < 5:
			return packets.ErrNotAuthorized
		case pk.FixedHeader.Qos == 2:
			return c.ack(packets.Pubrec, pk.PacketID, packets.ErrNotAuthorized)
		default:
			return c.ack(packets.Puback, pk.PacketID, packets.ErrNotAuthorized)
		}
	}
	j := job{id: pk.PacketID, qos: pk.FixedHeader.Qos, payload: pk.Payload}
	if !c.push(j) {
		return errClosing
	}
	return nil
}

// subscribe grants the device's own receipt topic and refuses every other
// filter.
func (c *client) subscribe(pk *packets.Packet) error {
	b := c.b
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		if f.Filter != c.receipt {
			b.cfg.Event("acl_refused")
			b.cfg.Log.Info("mqtt topic refused", "device", c.dev, "topic", f.Filter, "write", false)
			codes[i] = packets.ErrNotAuthorized.Code
			if c.version < 5 {
				codes[i] = packets.ErrUnspecifiedError.Code // 0x80, MQTT 3's only failure
			}
			continue
		}
		q := min(f.Qos, 1)
		b.mu.Lock()
		c.sess.subscribed, c.sess.qos = true, q
		b.mu.Unlock()
		codes[i] = q
	}
	var buf bytes.Buffer
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes,
		ProtocolVersion: c.version, Mods: packets.Mods{MaxSize: c.maxOut}}
	if err := ack.SubackEncode(&buf); err != nil {
		return err
	}
	return c.write(buf.Bytes())
}

func (c *client) unsubscribe(pk *packets.Packet) error {
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		codes[i] = packets.CodeNoSubscriptionExisted.Code
		c.b.mu.Lock()
		if f.Filter == c.receipt && c.sess.subscribed {
			c.sess.subscribed = false
			codes[i] = packets.CodeSuccess.Code
		}
		c.b.mu.Unlock()
	}
	var buf bytes.Buffer
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes,
		ProtocolVersion: c.version, Mods: packets.Mods{MaxSize: c.maxOut}}
	if err := ack.UnsubackEncode(&buf); err != nil {
		return err
	}
	return c.write(buf.Bytes())
}

// connack answers the CONNECT. A refusal of an MQTT 3 client carries
// MQTT 3's return code for it, if it has one (else none is sent and the
// connection closes).
func (c *client) connack(code packets.Code, present bool, props *packets.Properties) error {
	if props == nil {
		props = &packets.Properties{}
	}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		props.ReasonString = code.Reason
		if c.version < 5 {
			v3, ok := packets.V5CodesToV3[code]
			switch {
			case ok:
				code = v3
			case code.Code == packets.ErrNotAuthorized.Code:
				code = packets.Err3NotAuthorized
			default:
				return nil // MQTT 3 has no return code for it: the connection just closes
			}
		}
	}
	var buf bytes.Buffer
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, SessionPresent: present, ReasonCode: code.Code,
		Properties: *props, ProtocolVersion: c.version, Mods: packets.Mods{MaxSize: c.maxOut}}
	if err := ack.ConnackEncode(&buf); err != nil {
		return err
	}
	return c.write(buf.Bytes())
}

// ack sends a PUBACK, PUBREC or PUBCOMP.
func (c *client) ack(typ byte, id uint16, code packets.Code) error {
	var buf bytes.Buffer
	c.appendAck(&buf, typ, id, code)
	return c.write(buf.Bytes())
}

func (c *client) appendAck(buf *bytes.Buffer, typ byte, id uint16, code packets.Code) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id, ReasonCode: code.Code, ProtocolVersion: c.version,
		Mods: packets.Mods{MaxSize: c.maxOut}}
	switch typ {
	case packets.Puback:
		pk.PubackEncode(buf)
	case packets.Pubrec:
		pk.PubrecEncode(buf)
	case packets.Pubcomp:
		pk.PubcompEncode(buf)
	}
}

// disconnectWith tells an MQTT 5 client why it is disconnected (an MQTT 3
// client is just closed) and closes the connection.
func (c *client) disconnectWith(code packets.Code) {
	if c.version == 5 {
		var buf bytes.Buffer
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: code.Code, ProtocolVersion: 5,
			Mods: packets.Mods{MaxSize: c.maxOut}}
		if pk.DisconnectEncode(&buf) == nil {
			c.write(buf.Bytes())
		}
	}
	c.conn.Close()
}

// write writes whole packets to the connection, one write at a time.
func (c *client) write(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.conn.Write(p)
	return err
}

// writerLinger is how long a pipe's writer waits for more tickets before
// it ends.
const writerLinger = time.Second

// writeTimeout bounds one write to a client: a client that does not read
// is disconnected rather than holding its writer.
const writeTimeout = 10 * time.Second

// finish runs when the connection's goroutine ends: the connection closes,
// the pipe takes no more tickets (those queued are still committed and
// answered where possible), and the session is kept for its expiry or
// dropped.
func (c *client) finish() {
	c.conn.Close()
	if c.sess == nil {
		return
	}
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.sess.conn != c {
		return // taken over
	}
	c.sess.conn = nil
	if c.sess.expiry <= 0 {
		if b.sessions[c.dev] == c.sess {
			delete(b.sessions, c.dev)
		}
		return
	}
	c.sess.expires = time.Now().Add(c.sess.expiry)
}

// push hands a ticket to its shard's worker, in arrival order. It blocks
// while the client has Inflight tickets unanswered, and while the shard's
// queue is full. It returns false if the broker is closing.
func (c *client) push(j job) bool {
	select {
	case c.pipe.slots <- struct{}{}:
	case <-c.b.stopping:
		return false
	}
	select {
	case c.b.shards[c.shard] <- start{c: c, j: j}:
		return true
	case <-c.b.stopping:
		<-c.pipe.slots
		return false
	}
}

// start is a ticket on its way to Handler.
type start struct {
	c *client
	j job
}

// work is a shard's worker: it hands its clients' messages to Handle in
// the order they arrived, and queues each Reply on its client's pipe.
// Handle only checks a message and queues it for commit, so a worker goes
// on at once; the waiting is the pipes'. Doing this here, not on the
// connection's goroutine, keeps that goroutine's stack small for as long
// as the connection is idle.
func (b *Broker) work(in <-chan start) {
	for s := range in {
		c, j := s.c, s.j
		reply := b.cfg.Handle(context.Background(), entrance.Message{Device: c.dev, Payload: j.payload, Transport: "mqtt"})
		c.enqueue(answer{j: j, reply: reply})
	}
}

// answer is a message handed to Handle, waiting for its Reply.
type answer struct {
	j     job
	reply entrance.Reply
}

// enqueue queues an answer in order, starting the pipe's writer if it is
// not running.
func (c *client) enqueue(a answer) {
	p := &c.pipe
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, a)
	if !p.running {
		p.running = true
		c.b.writers.Add(1)
		go c.answerAll()
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// answerAll is the pipe's writer: it answers the queued tickets in order,
// each once its commit is done, until none has come for writerLinger.
func (c *client) answerAll() {
	defer c.b.writers.Done()
	p := &c.pipe
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	var buf bytes.Buffer
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			// Wait a little for the next tickets: under load the writer
			// lives on; an idle client keeps none.
			p.mu.Unlock()
			linger.Reset(writerLinger)
			select {
			case <-p.wake:
				continue
			case <-linger.C:
			}
			p.mu.Lock()
			if len(p.queue) > 0 {
				p.mu.Unlock()
				continue
			}
			p.running = false
			p.queue = nil // an idle client keeps no buffer
			p.mu.Unlock()
			return
		}
		a := p.queue[0]
		p.queue[0] = answer{}
		p.queue = p.queue[1:]
		p.mu.Unlock()
		ans := a.reply()
		c.appendAnswer(&buf, a.j, ans.Receipt, ans.Final())
		<-p.slots
		if buf.Len() > 0 {
			// A client that is gone sends its tickets again and is answered
			// "duplicate" with the original receipts.
			c.write(buf.Bytes())
			buf.Reset()
		}
	}
}

// appendAnswer appends a ticket's answer: its receipt, if the device
// subscribed to its receipt topic, then its acknowledgement. A ticket told
// "retry later" is acknowledged too: the device keeps it and sends it
// again. At receipt QoS 1 the receipt waits in the session for its PUBACK,
// and is sent again when the device reconnects to its kept session.
func (c *client) appendAnswer(buf *bytes.Buffer, j job, receipt []byte, ack bool) {
	b := c.b
	if receipt != nil {
		b.mu.Lock()
		s := c.sess
		sub, qos := s.subscribed, min(s.qos, b.cfg.ReceiptQoS)
		var id uint16
		if sub && qos > 0 {
			id = s.newID()
		}
		b.mu.Unlock()
		if sub {
			start := buf.Len()
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: c.receipt,
				Payload: receipt, PacketID: id, ProtocolVersion: c.version, Mods: packets.Mods{MaxSize: c.maxOut}}
			if err := pk.PublishEncode(buf); err != nil {
				b.cfg.Log.Warn("receipt encoding failed", "device", c.dev, "error", err)
				buf.Truncate(start)
			} else if qos > 0 {
				b.mu.Lock()
				dropped := s.keep(id, append([]byte(nil), buf.Bytes()[start:]...), b.cfg.Inflight)
				b.mu.Unlock()
				for range dropped {
					b.cfg.Event("receipt_unacked_dropped")
				}
				if dropped > 0 {
					b.cfg.Log.Info("mqtt: oldest unacknowledged receipts let go; the device gets them again by resending its tickets",
						"device", c.dev, "dropped", dropped, "kept", 2*b.cfg.Inflight)
				}
			}
		}
	}
	if ack && j.qos > 0 {
		typ := packets.Puback
		if j.qos == 2 {
			typ = packets.Pubrec
		}
		c.appendAck(buf, typ, j.id, packets.CodeSuccess)
	}
}

// newID returns the session's next packet id for a receipt, skipping ids
// still waiting for their PUBACK. Called with the broker's lock held.
func (s *session) newID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.unacked[s.nextID]; !used {
			return s.nextID
		}
	}
}

// keep holds a QoS 1 receipt until its PUBACK. At most 2×inflight wait;
// beyond that the oldest are let go and keep returns how many (the caller
// counts them, "receipt_unacked_dropped", and logs it): the device gets
// them again by sending its tickets again. Called with the broker's lock
// held.
func (s *session) keep(id uint16, p []byte, inflight int) (dropped int) {
	if s.unacked == nil {
		s.unacked = map[uint16][]byte{}
	}
	s.unacked[id] = p
	s.unackOrder = append(s.unackOrder, id)
	for len(s.unackOrder) > 2*inflight {
		delete(s.unacked, s.unackOrder[0])
		s.unackOrder = s.unackOrder[1:]
		dropped++
	}
	return dropped
}

func removeID(ids []uint16, id uint16) []uint16 {
	for i, x := range ids {
		if x == id {
			return append(ids[:i], ids[i+1:]...)
		}
	}
	return ids
}

// errWillRefused ends a connection whose Will the ACL does not allow.
var errWillRefused = errors.New("mqtt: will topic not allowed")

// remoteHost is the host part of a remote address.
func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// allowed is the ACL: a device writes its ticket topic (and its voucher
// topic, when vouchers are taken), reads its receipt topic, and nothing
// else.
func (b *Broker) allowed(dev, topic string, write bool) bool {
	t := b.cfg.Topics
	if write && b.cfg.Vouchers && topic == t.Voucher(dev) {
		return true
	}
	return (write && topic == t.Ticket(dev)) || (!write && topic == t.Receipt(dev))
}
