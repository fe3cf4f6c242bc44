package devicefw

import "github.com/farthing-iot/farthing/protocol"

// Reservations on the device: before it serves, a device asks for a
// grant (RequestGrant); the gateway's answer says up to which register of
// the meter it may serve, when to ask again, how long the grant lasts and
// what to do at its end. May tells the firmware, from its own register
// and clock, whether to serve — also while the gateway is out of reach,
// which is the point: a charger cut off mid-session serves to its grant
// and stops at the final unit by itself, and its tickets are accepted
// when it is back. Tickets reporting the grant's meter name the grant.
// Release ends it once the last ticket was answered.
//
// The client holds one grant at a time (one meter).

// Decision is what May allows.
type Decision uint8

// Decisions.
const (
	// Stop: no grant, or its final unit is reached, or it expired or went
	// idle: do not serve.
	Stop Decision = iota
	// Serve: within the grant.
	Serve
	// AskAgain: within the grant, past its threshold: serve, and ask for
	// more now (RequestGrant), before the limit comes.
	AskAgain
)

func (d Decision) String() string {
	return [...]string{"stop", "serve", "ask_again"}[d]
}

// grantState is the client's grant and the requests it is waiting on.
type grantState struct {
	g        protocol.Grant // the grant as last answered; ID 0: none
	meter    uint8          // its meter's index in Config.Meters
	asked    uint8          // the meter of the request waiting for an answer
	request  uint64         // the grant request waiting for an answer; 0: none
	release  uint64         // the release waiting for an answer; 0: none
	deadline uint64         // local clock: the grant's expiry
	lastUse  uint64         // local clock: the last ticket under it
}

// local is the device's clock for a grant's timers: Uptime when the
// device has no real-time clock (a gateway's time it learns later does
// not move them), else nowMs, its own clock.
func (c *Client) local(nowMs uint64) uint64 {
	if c.cfg.Uptime != nil {
		return c.cfg.Uptime()
	}
	return nowMs
}

// RequestGrant appends to dst a grant request for meter (an index of
// Config.Meters) standing at register, wanting units or, when units is 0,
// amount nanos' worth; it is sent where tickets go and answered by a
// receipt HandleReceipt takes. While a grant is open the same call asks
// for more (at AskAgain). It returns the request and its id, one of the
// device's seqs: the answer's seq.
func (c *Client) RequestGrant(dst []byte, meter uint8, register, units, amount uint64) ([]byte, uint64, error) {
	if int(meter) >= len(c.cfg.Meters) {
		return dst, 0, ErrUnknownMeter
	}
	if (units == 0) == (amount == 0) {
		return dst, 0, ErrConfig // before a seq is spent; the encoder checks the rest
	}
	r := protocol.GrantRequest{Device: c.cfg.Device, Meter: c.cfg.Meters[meter], Register: register, Epoch: c.cfg.Epoch,
		Units: units, Amount: amount}
	var err error
	if r.Request, err = c.seq.take(); err != nil {
		return dst, 0, err
	}
	out, err := c.enc.AppendGrantRequest(dst, &r, c.cfg.Signer)
	if err == nil {
		c.grant.request, c.grant.asked = r.Request, meter
		c.parse, c.onGrant = protocol.ParseGrantReceipt, (*Client).takeGrant
	}
	return out, r.Request, err
}

// Release appends to dst the release of the client's grant, the meter
// standing at register: send it once the last ticket under the grant was
// answered. A gateway that has not yet charged up to register answers
// retry later (grant_pending): re-send the pending tickets, then this.
// It returns the release and its id (the answer's seq).
func (c *Client) Release(dst []byte, register uint64) ([]byte, uint64, error) {
	if c.grant.g.ID == 0 {
		return dst, 0, ErrNoGrant
	}
	r := protocol.Release{Device: c.cfg.Device, Grant: c.grant.g.ID, Register: register, Epoch: c.cfg.Epoch}
	var err error
	if r.Request, err = c.seq.take(); err != nil {
		return dst, 0, err
	}
	out, err := c.enc.AppendRelease(dst, &r, c.cfg.Signer)
	if err == nil {
		c.grant.release = r.Request
	}
	return out, r.Request, err
}

// Grant returns the client's grant (ID 0: none) and its meter's index.
func (c *Client) Grant() (protocol.Grant, uint8) { return c.grant.g, c.grant.meter }

// May says whether the device may serve with its grant's meter standing
// at register, at nowMs (the device's clock, as for tickets): Serve below
// the threshold, AskAgain from it, Stop at the final unit (the limit; with
// final-unit action continue, the limit plus the grace), at the grant's
// expiry, after its idle timeout without a ticket, or with no grant.
func (c *Client) May(nowMs, register uint64) Decision {
	gs := &c.grant
	g := &gs.g
	if g.ID == 0 || g.Closed != protocol.GrantOpen {
		return Stop
	}
	now := c.local(nowMs)
	end := g.Limit
	if g.Final == protocol.FinalContinue {
		end = satAdd(end, g.Grace)
	}
	switch {
	case register >= end || now >= gs.deadline || now >= satAdd(gs.lastUse, g.Idle):
		return Stop
	case register >= g.Threshold:
		return AskAgain
	}
	return Serve
}

// takeGrant takes the answer to the client's grant request or release
// (r.Seq is its id); false if r answers neither.
func (c *Client) takeGrant(r *protocol.Receipt) bool {
	gs := &c.grant
	switch {
	case r.Seq == 0:
		return false
	case r.Seq == gs.request:
		gs.request = 0
		if !r.IsGrant() {
			return true // refused: the firmware reads why in the receipt
		}
		gs.g, gs.meter = r.Grant, gs.asked
	case r.Seq == gs.release:
		if r.Status == protocol.StatusRetryLater {
			return true // tickets first; the grant stands
		}
		gs.release = 0
		if r.IsGrant() || r.Status.Final() {
			gs.g = protocol.Grant{}
		}
		return true
	default:
		return false
	}
	now := c.local(r.Time)
	gs.deadline, gs.lastUse = satAdd(now, r.Grant.Validity), now
	if c.cfg.Uptime == nil {
		gs.deadline = r.Grant.Expiry // a device with its own clock: the gateway's expiry
	}
	return true
}

// underGrant names the grant in a ticket that reads its meter, and counts
// the ticket as a use of it.
func (c *Client) underGrant(t *protocol.Ticket, meters uint16, nowMs uint64) {
	gs := &c.grant
	if gs.g.ID != 0 && meters&(1<<gs.meter) != 0 {
		t.Grant = gs.g.ID
		gs.lastUse = c.local(nowMs)
	}
}

// satAdd is a + b, or the largest uint64 when that overflows.
func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<64 - 1
}
