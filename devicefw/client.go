package devicefw

import "github.com/farthing-iot/farthing/protocol"

// Reading is one meter's cumulative register, with the meter named by its
// index in Config.Meters.
type Reading struct {
	Meter    uint8
	Register uint64
}

// Config configures a Client. Fields may not change after New.
type Config struct {
	// Device is the device id, as registered at the gateway.
	Device string
	// Meters names the device's meters (at most protocol.MaxReadings);
	// Reading.Meter indexes it.
	Meters []string
	// Signer signs tickets: a *protocol.HMAC with the device's ticket key,
	// or a *protocol.Ed25519Signer.
	Signer protocol.Signer
	// Receipts verifies receipts: a *protocol.HMAC with the device's
	// receipt key, or a *protocol.Ed25519Verifier with the gateway's key.
	Receipts protocol.Verifier
	// Seq persists the sequence reservation.
	Seq SeqStore
	// Reserve is how many seqs one SeqStore write reserves; 0 means
	// DefaultReserve.
	Reserve uint64
	// Epoch is the register epoch: change it when the registers restart
	// from zero.
	Epoch uint64
	// Account and Session are put into every ticket when not empty.
	Account, Session string
	// Pending is the arena for unacknowledged tickets, cut into slots of
	// SlotSize bytes (at most MaxPending slots are used). Without it,
	// Report fails and only Build works.
	Pending []byte
	// SlotSize is the size of a pending slot; 0 means
	// protocol.MaxTicketSize. A ticket with one short reading takes about
	// 120 bytes (MAC) or 150 (Ed25519).
	SlotSize int
	// Uptime, for a device without a real-time clock, counts milliseconds
	// from any start (a boot): the client learns the offset to the
	// gateway's clock from every receipt that carries it, and Now is then
	// the time. Nil: the firmware has its own clock.
	Uptime func() uint64
}

// Client builds and tracks one device's tickets. It is not safe for
// concurrent use; firmware has one. The zero value is not usable: call New.
type Client struct {
	cfg       Config
	enc       protocol.Encoder
	seq       sequencer
	ring      ring
	readings  [protocol.MaxReadings]protocol.Reading
	env       protocol.Envelope
	receipt   protocol.Receipt
	scratch   [protocol.MaxReceiptSize + 64]byte
	offset    int64 // the gateway's clock less Uptime, once synced
	synced    bool
	timeNonce [8]byte // the nonce of the time request waiting for its answer
	grant     grantState
	// parse reads receipts: protocol.ParseReceipt, or ParseGrantReceipt
	// once the client asked for a grant, and onGrant then takes grant
	// answers. Firmware that never asks for a grant links neither.
	parse   func([]byte, *protocol.Envelope, *protocol.Receipt) error
	onGrant func(*Client, *protocol.Receipt) bool
}

// New checks cfg, loads the sequence reservation and returns a Client.
func New(cfg Config) (*Client, error) {
	if !protocol.ValidName(cfg.Device, protocol.MaxDeviceIDLen) ||
		len(cfg.Meters) == 0 || len(cfg.Meters) > protocol.MaxReadings ||
		cfg.Signer == nil || cfg.Receipts == nil || cfg.Seq == nil {
		return nil, ErrConfig
	}
	for i, m := range cfg.Meters {
		if !protocol.ValidName(m, protocol.MaxMeterNameLen) {
			return nil, ErrConfig
		}
		for _, o := range cfg.Meters[:i] {
			if o == m {
				return nil, ErrConfig
			}
		}
	}
	if cfg.Reserve == 0 {
		cfg.Reserve = DefaultReserve
	}
	if cfg.SlotSize == 0 {
		cfg.SlotSize = protocol.MaxTicketSize
	}
	if cfg.SlotSize < 64 || cfg.SlotSize > 0xffff {
		return nil, ErrConfig
	}
	c := &Client{cfg: cfg, parse: protocol.ParseReceipt}
	if err := c.seq.init(cfg.Seq, cfg.Reserve); err != nil {
		return nil, err
	}
	c.ring.init(cfg.Pending, cfg.SlotSize)
	return c, nil
}

// Build signs a ticket for readings taken at nowMs (Unix milliseconds) and
// appends it to dst, without keeping it pending. It returns the ticket and
// its seq. With room in dst it allocates nothing.
func (c *Client) Build(dst []byte, nowMs uint64, readings []Reading) ([]byte, uint64, error) {
	t, meters, err := c.ticket(nowMs, readings)
	if err != nil {
		return dst, 0, err
	}
	c.underGrant(&t, meters, nowMs)
	if t.Seq, err = c.seq.take(); err != nil {
		return dst, 0, err
	}
	out, err := c.enc.AppendTicket(dst, &t, c.cfg.Signer)
	return out, t.Seq, err
}

// Report signs a ticket like Build, keeps it pending until a final receipt
// answers it, and returns the bytes to send. The bytes stay valid until the
// ticket leaves the pending set. Older pending tickets that this one covers
// are dropped.
func (c *Client) Report(nowMs uint64, readings []Reading) ([]byte, uint64, error) {
	t, meters, err := c.ticket(nowMs, readings)
	if err != nil {
		return nil, 0, err
	}
	if c.ring.n == 0 {
		return nil, 0, ErrConfig
	}
	i := c.ring.pick(meters, c.cfg.Epoch)
	if i < 0 {
		return nil, 0, ErrPendingFull
	}
	c.underGrant(&t, meters, nowMs)
	t.Seq = c.seq.next // validate before a seq is spent
	if err := t.Validate(); err != nil {
		return nil, 0, err
	}
	if t.Seq, err = c.seq.take(); err != nil {
		return nil, 0, err
	}
	// From here slot i is overwritten: if it held a ticket, newer tickets
	// and this one cover it, and if encoding fails the device's registers
	// still hold the usage for the next report.
	c.ring.slots[i] = slot{}
	out, err := c.enc.AppendTicket(c.ring.buf(i)[:0], &t, c.cfg.Signer)
	if err != nil {
		return nil, 0, err
	}
	if len(out) > c.ring.size || &out[0] != &c.ring.arena[i*c.ring.size] {
		return nil, 0, ErrSlotTooSmall
	}
	c.ring.slots[i] = slot{seq: t.Seq, epoch: c.cfg.Epoch, meters: meters, n: uint16(len(out))}
	c.ring.supersede()
	return out, t.Seq, nil
}

// ticket fills a protocol.Ticket (seq not yet set) from readings.
func (c *Client) ticket(nowMs uint64, readings []Reading) (protocol.Ticket, uint16, error) {
	var meters uint16
	if len(readings) == 0 || len(readings) > len(c.readings) {
		return protocol.Ticket{}, 0, ErrUnknownMeter
	}
	for i, r := range readings {
		if int(r.Meter) >= len(c.cfg.Meters) {
			return protocol.Ticket{}, 0, ErrUnknownMeter
		}
		meters |= 1 << r.Meter
		c.readings[i] = protocol.Reading{Meter: c.cfg.Meters[r.Meter], Register: r.Register}
	}
	return protocol.Ticket{
		Device:   c.cfg.Device,
		Time:     nowMs,
		Epoch:    c.cfg.Epoch,
		Readings: c.readings[:len(readings)],
		Account:  c.cfg.Account,
		Session:  c.cfg.Session,
	}, meters, nil
}

// HandleReceipt parses and verifies a receipt, matches it to the pending
// ticket with its seq and, if its status is final (anything but retry
// later), frees that ticket. It returns the receipt so firmware can act on
// its status and balance: stop serving on insufficient funds, log a
// rejection's reason, wait RetryAfter before re-sending.
//
// A receipt for a voucher (r.Voucher set) frees no ticket: its status and
// balance say whether the voucher was redeemed.
//
// A receipt that does not parse or verify is refused with a
// *protocol.Error and changes nothing. A valid receipt for a ticket that
// is no longer pending returns ErrNotPending along with the receipt.
func (c *Client) HandleReceipt(b []byte) (protocol.Receipt, error) {
	r := &c.receipt
	r.Device = c.cfg.Device
	if err := c.parse(b, &c.env, r); err != nil {
		return protocol.Receipt{}, err
	}
	if err := c.env.Verify(c.cfg.Receipts, c.scratch[:]); err != nil {
		return protocol.Receipt{}, err
	}
	if r.Device != c.cfg.Device {
		return protocol.Receipt{}, ErrWrongDevice
	}
	if r.IsTimeAnswer() {
		if r.Nonce != c.timeNonce {
			return *r, ErrNotPending // not the answer to this device's last time request: its time is not taken
		}
		c.learnTime(r.Time)
		c.timeNonce = [8]byte{}
		return *r, nil
	}
	if r.Voucher != "" {
		return *r, nil // answers a voucher the device passed on: no ticket to free
	}
	if c.onGrant != nil && c.onGrant(c, r) {
		c.learnTime(r.Time) // answers a fresh request id: not a replay
		return *r, nil
	}
	i := c.ring.find(r.Seq)
	if i < 0 {
		return *r, ErrNotPending
	}
	// The answer to a pending ticket, verified: its time is the gateway's
	// (an old receipt replayed matches no pending ticket, so it cannot set
	// the clock back).
	c.learnTime(r.Time)
	if r.Status.Final() {
		c.ring.slots[i] = slot{}
	}
	return *r, nil
}

// NextPending returns the pending ticket with the smallest seq greater than
// after, for re-sending in order after a reconnect:
//
//	for seq, msg, ok := c.NextPending(0); ok; seq, msg, ok = c.NextPending(seq) { send(msg) }
func (c *Client) NextPending(after uint64) (seq uint64, msg []byte, ok bool) {
	i := c.ring.next(after)
	if i < 0 {
		return 0, nil, false
	}
	return c.ring.slots[i].seq, c.ring.bytes(i), true
}

// Pending returns the number of unacknowledged tickets.
func (c *Client) Pending() int { return c.ring.count() }

// learnTime takes the gateway's time (Unix ms; 0: none) as the device's
// clock, when it has no clock of its own (Config.Uptime).
func (c *Client) learnTime(t uint64) {
	if t != 0 && c.cfg.Uptime != nil {
		c.offset, c.synced = int64(t)-int64(c.cfg.Uptime()), true
	}
}

// TimeRequest asks the gateway for its time, before a first ticket:
// it appends to dst the request, MAC'd or signed like a ticket, to send
// where tickets go. Its nonce is one of the device's seqs, never used
// before; HandleReceipt takes the time only from the answer that carries
// it, so an old answer replayed cannot set the clock back.
func (c *Client) TimeRequest(dst []byte) ([]byte, error) {
	seq, err := c.seq.take()
	if err != nil {
		return dst, err
	}
	var n [8]byte
	for i := range n {
		n[7-i] = byte(seq >> (8 * i))
	}
	out, err := c.enc.AppendTimeRequest(dst, &protocol.TimeRequest{Device: c.cfg.Device, Nonce: n}, c.cfg.Signer)
	if err == nil {
		c.timeNonce = n
	}
	return out, err
}

// Now is the time for a ticket of a device without a real-time clock
// (Config.Uptime): Uptime plus the offset to the gateway's clock its last
// receipt taught it, and true; before any receipt did, Uptime and false (a
// ticket dated so is refused clock_skew, and its receipt teaches the time,
// or the device is registered clock: gateway and the gateway dates it).
// Without Uptime it returns 0 and false.
func (c *Client) Now() (uint64, bool) {
	if c.cfg.Uptime == nil {
		return 0, false
	}
	up := c.cfg.Uptime()
	if !c.synced {
		return max(up, 1), false
	}
	return uint64(max(int64(up)+c.offset, 1)), true
}

// NextSeq returns the seq the next ticket will carry.
func (c *Client) NextSeq() uint64 { return c.seq.next }

// SetEpoch changes the register epoch of the tickets that follow: call it
// when the registers restart from zero. Pending tickets of the old epoch
// stay pending; tickets of the new epoch never supersede them.
func (c *Client) SetEpoch(epoch uint64) { c.cfg.Epoch = epoch }
