// Package mqttdev connects a devicefw.Client to a Farthing gateway over
// MQTT with paho, for Linux-class devices. TinyGo never compiles it.
//
// It publishes tickets at QoS 1 on PREFIX/DEVICE/ticket, reads receipts on
// PREFIX/DEVICE/receipt, hands them to the client (which checks and matches
// them), and after every (re)connect sends again every ticket still
// pending, oldest first.
package mqttdev

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

// Config configures a device connection.
type Config struct {
	Broker   string // tcp://host:port
	Device   string // the device id, also the MQTT user name
	Password string // the device's MQTT password
	Prefix   string // topic prefix; default farthing/v1
	Client   *devicefw.Client
	// OnReceipt is called for every receipt (or receipt error), from
	// paho's goroutine, after the client has handled it.
	OnReceipt func(protocol.Receipt, error)
	// OnPublish, if set, is called with every ticket published, first
	// sends and resends, for logging.
	OnPublish func(seq uint64, ticket []byte)
}

// Device is a connected device.
type Device struct {
	cfg  Config
	mu   sync.Mutex // guards the devicefw.Client, which is single-threaded
	conn paho.Client
}

func (d *Device) ticketTopic() string {
	return protocol.Topics{Prefix: d.cfg.Prefix}.Ticket(d.cfg.Device)
}
func (d *Device) receiptTopic() string {
	return protocol.Topics{Prefix: d.cfg.Prefix}.Receipt(d.cfg.Device)
}

// Connect connects and subscribes; it returns once the subscription is in
// place or ctx ends.
func Connect(ctx context.Context, cfg Config) (*Device, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = protocol.DefaultTopicPrefix
	}
	if cfg.Client == nil {
		return nil, errors.New("mqttdev: no devicefw client")
	}
	d := &Device{cfg: cfg}
	subscribed := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.Device).
		SetUsername(cfg.Device).SetPassword(cfg.Password).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(false).SetMaxReconnectInterval(2 * time.Second).
		SetOrderMatters(false).SetKeepAlive(20 * time.Second)
	opts.SetOnConnectHandler(func(c paho.Client) {
		t := c.Subscribe(d.receiptTopic(), 1, d.onReceipt)
		go func() {
			t.Wait()
			// Resend before Connect returns, so a ticket reported right
			// after Connect is not sent twice.
			if t.Error() == nil {
				d.ResendPending()
			}
			select {
			case subscribed <- t.Error():
			default:
			}
		}()
	})
	d.conn = paho.NewClient(opts)
	t := d.conn.Connect()
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return nil, fmt.Errorf("mqttdev: connect: %w", err)
		}
	case <-ctx.Done():
		d.conn.Disconnect(0)
		return nil, ctx.Err()
	}
	select {
	case err := <-subscribed:
		if err != nil {
			d.conn.Disconnect(0)
			return nil, fmt.Errorf("mqttdev: subscribe: %w", err)
		}
	case <-ctx.Done():
		d.conn.Disconnect(0)
		return nil, ctx.Err()
	}
	return d, nil
}

func (d *Device) onReceipt(_ paho.Client, m paho.Message) {
	d.mu.Lock()
	r, err := d.cfg.Client.HandleReceipt(m.Payload())
	d.mu.Unlock()
	if d.cfg.OnReceipt != nil {
		d.cfg.OnReceipt(r, err)
	}
}

// Redeem passes on a voucher (bought by the customer, typed on a keypad)
// on the device's voucher topic. The answer is a receipt with the
// voucher's id (Receipt.Voucher), delivered to OnReceipt: accepted with
// the account's new balance, or rejected with the reason.
func (d *Device) Redeem(voucher []byte) error {
	t := d.conn.Publish(protocol.Topics{Prefix: d.cfg.Prefix}.Voucher(d.cfg.Device), 1, false, voucher)
	if !t.WaitTimeout(10 * time.Second) {
		return errors.New("mqttdev: voucher not acknowledged within 10s")
	}
	return t.Error()
}

// Report signs a ticket for the readings, keeps it pending and publishes
// it. It does not wait for the broker; the receipt comes to OnReceipt.
func (d *Device) Report(nowMs uint64, readings []devicefw.Reading) (uint64, error) {
	return d.publishNew(func() ([]byte, uint64, error) { return d.cfg.Client.Report(nowMs, readings) })
}

// publishNew makes a ticket with mk (under the client's lock), keeps it
// pending, and publishes a copy: the pending slot may be reused before
// paho writes it.
func (d *Device) publishNew(mk func() ([]byte, uint64, error)) (uint64, error) {
	d.mu.Lock()
	msg, seq, err := mk()
	if err == nil {
		msg = append([]byte(nil), msg...)
	}
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	d.conn.Publish(d.ticketTopic(), 1, false, msg)
	if d.cfg.OnPublish != nil {
		d.cfg.OnPublish(seq, msg)
	}
	return seq, nil
}

// Commit publishes a payword chain's commitment on the ticket topic. Its
// receipt (seq protocol.PaywordSeq(number, 0): the chain's index 0) comes
// to OnReceipt with devicefw.ErrNotPending, since no ticket waits for it.
func (d *Device) Commit(ch *devicefw.Chain) error {
	d.mu.Lock()
	msg, err := d.cfg.Client.Commit(nil, ch)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.conn.Publish(d.ticketTopic(), 1, false, msg)
	return nil
}

// ReportPayword moves the chain to index i, keeps the payword ticket
// pending and publishes it, as Report does a ticket.
func (d *Device) ReportPayword(ch *devicefw.Chain, i uint32) (uint64, error) {
	return d.publishNew(func() ([]byte, uint64, error) { return d.cfg.Client.ReportPayword(ch, i) })
}

// RequestTime asks the gateway for its time (a device without a real-time
// clock, before its first ticket) on the ticket topic; the answer comes to
// OnReceipt, and the client takes its time (devicefw.Client.Now).
func (d *Device) RequestTime() error {
	d.mu.Lock()
	msg, err := d.cfg.Client.TimeRequest(nil)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.conn.Publish(d.ticketTopic(), 1, false, msg)
	return nil
}

// RequestGrant asks the gateway for a grant on meter (an index of the
// client's meters) standing at register: units, or amount nanos' worth
// when units is 0. It is published on the ticket topic; the answer comes
// to OnReceipt, and the client takes it (devicefw.Client.May). It returns
// the request's id: the answer's seq.
func (d *Device) RequestGrant(meter uint8, register, units, amount uint64) (uint64, error) {
	d.mu.Lock()
	msg, id, err := d.cfg.Client.RequestGrant(nil, meter, register, units, amount)
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	d.conn.Publish(d.ticketTopic(), 1, false, msg)
	return id, nil
}

// Release ends the client's grant, the meter standing at register; the
// answer comes to OnReceipt (retry later, grant_pending: resend the
// pending tickets first). It returns the release's id: the answer's seq.
func (d *Device) Release(register uint64) (uint64, error) {
	d.mu.Lock()
	msg, id, err := d.cfg.Client.Release(nil, register)
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	d.conn.Publish(d.ticketTopic(), 1, false, msg)
	return id, nil
}

// May says whether the device may serve (devicefw.Client.May).
func (d *Device) May(nowMs, register uint64) devicefw.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Client.May(nowMs, register)
}

// ResendPending publishes every pending ticket again, oldest first.
func (d *Device) ResendPending() int {
	type pending struct {
		seq uint64
		msg []byte
	}
	var msgs []pending
	d.mu.Lock()
	for seq, msg, ok := d.cfg.Client.NextPending(0); ok; seq, msg, ok = d.cfg.Client.NextPending(seq) {
		msgs = append(msgs, pending{seq, append([]byte(nil), msg...)})
	}
	d.mu.Unlock()
	for _, m := range msgs {
		d.conn.Publish(d.ticketTopic(), 1, false, m.msg)
		if d.cfg.OnPublish != nil {
			d.cfg.OnPublish(m.seq, m.msg)
		}
	}
	return len(msgs)
}

// Pending returns the number of unacknowledged tickets.
func (d *Device) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Client.Pending()
}

// Close disconnects.
func (d *Device) Close() { d.conn.Disconnect(250) }
