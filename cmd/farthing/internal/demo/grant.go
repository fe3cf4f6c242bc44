package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// The demo's charger session under a grant: a driver plugs in, the
// charger asks for 2 kWh before it energises, serves 250 Wh at a time
// while its grant allows, asks again at the threshold, and the driver
// unplugs at 3 kWh; the charger releases the rest.
const (
	grantStep    = 2000 // Wh asked for each time
	serveStep    = 250  // Wh between tickets
	sessionUntil = 3000 // Wh when the driver unplugs
)

// chargerSession is what the session was granted, used, charged and
// given back.
type chargerSession struct {
	Device                                 string
	Granted, Used, AskedAgainAt            uint64 // Wh
	FirstReserved, Charged, Paid, Released metering.Nanos
	Err                                    error
}

// sessionDevice is the charger: its client, connection and receipts.
type sessionDevice struct {
	c        *devicefw.Client
	d        *mqttdev.Device
	receipts chan protocol.Receipt
}

// answer waits for the receipt of seq (a ticket's, or a request's id).
func (s *sessionDevice) answer(ctx context.Context, seq uint64) (protocol.Receipt, error) {
	for {
		select {
		case r := <-s.receipts:
			if r.Seq == seq {
				return r, nil
			}
		case <-ctx.Done():
			return protocol.Receipt{}, fmt.Errorf("no answer to %d: %w", seq, ctx.Err())
		}
	}
}

// runChargerSession runs the session of device d over the broker.
func runChargerSession(ctx context.Context, broker string, d sim.Device) (cs chargerSession) {
	cs.Device = d.Entry.ID
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := connectCharger(ctx, broker, d)
	if err != nil {
		cs.Err = err
		return cs
	}
	defer s.d.Close()
	cs.Err = s.session(ctx, &cs)
	return cs
}

func connectCharger(ctx context.Context, broker string, d sim.Device) (*sessionDevice, error) {
	signer, err := d.Secrets.Signer()
	if err != nil {
		return nil, err
	}
	rv, err := d.Secrets.ReceiptVerifier()
	if err != nil {
		return nil, err
	}
	s := &sessionDevice{receipts: make(chan protocol.Receipt, 16)}
	if s.c, err = devicefw.New(devicefw.Config{Device: d.Entry.ID, Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 2*protocol.MaxTicketSize)}); err != nil {
		return nil, err
	}
	s.d, err = mqttdev.Connect(ctx, mqttdev.Config{Broker: broker, Device: d.Entry.ID, Password: d.Secrets.MQTTPassword(), Client: s.c,
		OnReceipt: func(r protocol.Receipt, err error) {
			if err == nil || errors.Is(err, devicefw.ErrNotPending) {
				s.receipts <- r
			}
		}})
	return s, err
}

// session asks, serves, asks again and releases, recording what it saw
// in cs.
func (s *sessionDevice) session(ctx context.Context, cs *chargerSession) error {
	var reg uint64
	if _, err := s.report(ctx, reg); err != nil { // the meter's baseline
		return err
	}
	g, err := s.ask(ctx, reg)
	if err != nil {
		return err
	}
	cs.FirstReserved, cs.Granted = metering.Nanos(g.Grant.Reserved), grantStep
	for reg < sessionUntil {
		switch s.d.May(uint64(time.Now().UnixMilli()), reg) {
		case devicefw.Stop:
			return fmt.Errorf("the grant stopped the charger at %d Wh", reg)
		case devicefw.AskAgain:
			if cs.AskedAgainAt == 0 {
				if _, err := s.ask(ctx, reg); err != nil {
					return err
				}
				cs.AskedAgainAt, cs.Granted = reg, cs.Granted+grantStep
			}
		}
		reg += serveStep
		r, err := s.report(ctx, reg)
		if err != nil {
			return err
		}
		cs.Charged += metering.Nanos(r.Charged)
	}
	cs.Used = reg
	id, err := s.d.Release(reg)
	if err != nil {
		return err
	}
	r, err := s.answer(ctx, id)
	if err != nil {
		return err
	}
	if r.Grant.Closed != protocol.GrantReleased {
		return fmt.Errorf("release answered %+v", r)
	}
	return nil // what the grant paid and gave back: from the books (settle)
}

// ask requests grantStep Wh more, standing at reg, and waits for the
// grant.
func (s *sessionDevice) ask(ctx context.Context, reg uint64) (protocol.Receipt, error) {
	id, err := s.d.RequestGrant(0, reg, grantStep, 0)
	if err != nil {
		return protocol.Receipt{}, err
	}
	r, err := s.answer(ctx, id)
	if err == nil && !r.IsGrant() {
		err = fmt.Errorf("no grant: %s %s", r.Status, r.Reason)
	}
	return r, err
}

// report sends a ticket of register reg and waits for it to be accepted.
func (s *sessionDevice) report(ctx context.Context, reg uint64) (protocol.Receipt, error) {
	seq, err := s.d.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: reg}})
	if err != nil {
		return protocol.Receipt{}, err
	}
	r, err := s.answer(ctx, seq)
	if err == nil && r.Status != protocol.StatusAccepted {
		err = fmt.Errorf("ticket at %d Wh: %s %s", reg, r.Status, r.Reason)
	}
	return r, err
}

// String tells the session.
func (cs chargerSession) String() string {
	if cs.Err != nil {
		return "charger session under a grant failed: " + cs.Err.Error()
	}
	eur := func(n metering.Nanos) metering.Money { return metering.Money{Nanos: n, Currency: "EUR"} }
	kwh := func(wh uint64) string { return fmt.Sprintf("%d.%03d kWh", wh/1000, wh%1000) }
	return fmt.Sprintf("charger session under a grant (%s, prepaid account driver): granted %s before it served (%s reserved),\n"+
		"    asked again at %s for %s more, unplugged at %s: charged %s from the reservation, %s released",
		cs.Device, kwh(grantStep), eur(cs.FirstReserved), kwh(cs.AskedAgainAt), kwh(grantStep), kwh(cs.Used), eur(cs.Paid), eur(cs.Released))
}

// memSeq keeps the charger's seq reservation in memory: a demo device
// does not outlive the demo.
type memSeq struct{ v uint64 }

func (m *memSeq) LoadSeq() (uint64, error) { return m.v, nil }
func (m *memSeq) SaveSeq(v uint64) error   { m.v = v; return nil }
