// Package coapdev connects a devicefw.Client to a Farthing gateway over
// CoAP on DTLS (pion/dtls v3, go-coap v3), for Linux-class devices and
// cellular modules driven from Linux. TinyGo never compiles it.
//
// The device authenticates with its PSK (identity: its device id) and
// offers a Connection ID, so its session survives a NAT rebinding. Each
// ticket is a confirmable POST to /t; the receipt comes back in the
// response and is handed to the client, which checks and matches it.
package coapdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
)

// Config configures a device connection.
type Config struct {
	Addr   string // the gateway's UDP address, host:port
	Device string // device id, the PSK identity
	PSK    []byte // the device's DTLS PSK
	Path   string // default protocol.CoAPTicketPath
	Client *devicefw.Client
	// HandshakeTimeout bounds the DTLS handshake Dial makes; default 10s.
	HandshakeTimeout time.Duration
}

// Device is a device with a DTLS session to the gateway.
type Device struct {
	cfg Config
	mu  sync.Mutex // guards the devicefw.Client
	cc  *udpClient.Conn
}

// Dial opens the session and completes its DTLS handshake within
// HandshakeTimeout, so that a refused handshake (a wrong key) is an error
// here and never a request left waiting.
func Dial(cfg Config) (*Device, error) {
	if cfg.Client == nil {
		return nil, errors.New("coapdev: no devicefw client")
	}
	if cfg.Path == "" {
		cfg.Path = protocol.CoAPTicketPath
	}
	cc, err := coapdtls.Dial(cfg.Addr, coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return cfg.PSK, nil }),
		piondtls.WithPSKIdentityHint([]byte(cfg.Device)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
	))
	if err != nil {
		return nil, fmt.Errorf("coapdev: %w", err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if dc, ok := cc.NetConn().(*piondtls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.HandshakeTimeout)
		err := dc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			cc.Close()
			return nil, fmt.Errorf("coapdev: DTLS handshake with %s: %w", cfg.Addr, err)
		}
	}
	return &Device{cfg: cfg, cc: cc}, nil
}

// ContentFormat is the CoAP Content-Format of a ticket: 17 (COSE_Mac0) or
// 18 (COSE_Sign1), read from its COSE tag (protocol.ContentFormatOf).
func ContentFormat(ticket []byte) message.MediaType {
	return message.MediaType(protocol.ContentFormatOf(ticket))
}

// Report signs a ticket for the readings, keeps it pending, POSTs it and
// returns the gateway's receipt once it has been checked and matched. On
// a transport error the ticket stays pending for ResendPending.
func (d *Device) Report(ctx context.Context, nowMs uint64, readings []devicefw.Reading) (protocol.Receipt, error) {
	return d.sendNew(ctx, func() ([]byte, uint64, error) { return d.cfg.Client.Report(nowMs, readings) })
}

// sendNew makes a ticket with mk (under the client's lock), keeps it
// pending, and POSTs a copy: the pending slot may be reused meanwhile.
func (d *Device) sendNew(ctx context.Context, mk func() ([]byte, uint64, error)) (protocol.Receipt, error) {
	d.mu.Lock()
	msg, _, err := mk()
	if err == nil {
		msg = append([]byte(nil), msg...)
	}
	d.mu.Unlock()
	if err != nil {
		return protocol.Receipt{}, err
	}
	return d.Send(ctx, msg)
}

// Commit POSTs a payword chain's commitment and returns its receipt (seq
// protocol.PaywordSeq(number, 0): the chain's index 0; no ticket waits for
// it, so devicefw.ErrNotPending is not an error here).
func (d *Device) Commit(ctx context.Context, ch *devicefw.Chain) (protocol.Receipt, error) {
	d.mu.Lock()
	msg, err := d.cfg.Client.Commit(nil, ch)
	d.mu.Unlock()
	if err != nil {
		return protocol.Receipt{}, err
	}
	r, err := d.Send(ctx, msg)
	if errors.Is(err, devicefw.ErrNotPending) {
		err = nil
	}
	return r, err
}

// ReportPayword moves the chain to index i, keeps the payword ticket
// pending, POSTs it and returns the gateway's receipt, as Report does a
// ticket.
func (d *Device) ReportPayword(ctx context.Context, ch *devicefw.Chain, i uint32) (protocol.Receipt, error) {
	return d.sendNew(ctx, func() ([]byte, uint64, error) { return d.cfg.Client.ReportPayword(ch, i) })
}

// Send POSTs one ticket's bytes and handles the receipt.
func (d *Device) Send(ctx context.Context, ticket []byte) (protocol.Receipt, error) {
	return d.post(ctx, "/"+d.cfg.Path, ContentFormat(ticket), ticket)
}

// post POSTs a COSE message to path and handles the receipt it is
// answered with.
func (d *Device) post(ctx context.Context, path string, cf message.MediaType, msg []byte) (protocol.Receipt, error) {
	resp, err := d.cc.Post(ctx, path, cf, bytes.NewReader(msg))
	if err != nil {
		return protocol.Receipt{}, fmt.Errorf("coapdev: %w", err)
	}
	if resp.Body() == nil {
		return protocol.Receipt{}, fmt.Errorf("coapdev: %v without a receipt", resp.Code())
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body(), protocol.MaxReceiptSize+1))
	if err != nil {
		return protocol.Receipt{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Client.HandleReceipt(body)
}

// Redeem POSTs a voucher (bought by the customer, typed on a keypad) to
// the gateway's voucher resource and returns its receipt: accepted with
// the account's new balance, or rejected with the reason; Receipt.Voucher
// is the voucher's id.
func (d *Device) Redeem(ctx context.Context, voucher []byte) (protocol.Receipt, error) {
	return d.post(ctx, "/"+protocol.CoAPVoucherPath, message.MediaType(protocol.ContentFormatSign1), voucher)
}

// RequestTime asks the gateway for its time (a device without a real-time
// clock, before its first ticket) and returns the answer, whose time the
// client has taken (devicefw.Client.Now).
func (d *Device) RequestTime(ctx context.Context) (protocol.Receipt, error) {
	d.mu.Lock()
	msg, err := d.cfg.Client.TimeRequest(nil)
	d.mu.Unlock()
	if err != nil {
		return protocol.Receipt{}, err
	}
	return d.Send(ctx, msg)
}

// RequestGrant asks the gateway for a grant on meter (an index of the
// client's meters) standing at register: units, or amount nanos' worth
// when units is 0. The answer, taken by the client, carries the grant or
// says why there is none (devicefw.Client.May then says whether to serve).
func (d *Device) RequestGrant(ctx context.Context, meter uint8, register, units, amount uint64) (protocol.Receipt, error) {
	d.mu.Lock()
	msg, _, err := d.cfg.Client.RequestGrant(nil, meter, register, units, amount)
	d.mu.Unlock()
	if err != nil {
		return protocol.Receipt{}, err
	}
	return d.Send(ctx, msg)
}

// May says whether the device may serve (devicefw.Client.May).
func (d *Device) May(nowMs, register uint64) devicefw.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Client.May(nowMs, register)
}

// Release ends the client's grant, the meter standing at register; a
// retry-later answer (grant_pending) means pending tickets go first.
func (d *Device) Release(ctx context.Context, register uint64) (protocol.Receipt, error) {
	d.mu.Lock()
	msg, _, err := d.cfg.Client.Release(nil, register)
	d.mu.Unlock()
	if err != nil {
		return protocol.Receipt{}, err
	}
	return d.Send(ctx, msg)
}

// ResendPending sends every pending ticket again, oldest first, and returns
// how many got a final answer.
func (d *Device) ResendPending(ctx context.Context) int {
	var msgs [][]byte
	d.mu.Lock()
	for seq, msg, ok := d.cfg.Client.NextPending(0); ok; seq, msg, ok = d.cfg.Client.NextPending(seq) {
		msgs = append(msgs, append([]byte(nil), msg...))
	}
	d.mu.Unlock()
	n := 0
	for _, m := range msgs {
		if r, err := d.Send(ctx, m); err == nil && r.Status.Final() {
			n++
		}
	}
	return n
}

// Pending returns the number of unacknowledged tickets.
func (d *Device) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Client.Pending()
}

// Close ends the session.
func (d *Device) Close() error { return d.cc.Close() }
