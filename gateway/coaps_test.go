package gateway_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/coapdev"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/protocol"
)

func dialCoAP(t testing.TB, addr, identity string, psk []byte) (*udpClient.Conn, error) {
	return coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	))
}

func post(t testing.TB, cc *udpClient.Conn, cf message.MediaType, body []byte) *pool.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/t", cf, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /t: %v", err)
	}
	return resp
}

func coapReceipt(t testing.TB, tg *testGateway, device string, resp *pool.Message) protocol.Receipt {
	t.Helper()
	b, err := io.ReadAll(resp.Body())
	if err != nil {
		t.Fatal(err)
	}
	var env protocol.Envelope
	var r protocol.Receipt
	if err := protocol.ParseReceipt(b, &env, &r); err != nil {
		t.Fatalf("response %v is not a receipt: %v (%q)", resp.Code(), err, b)
	}
	rv, _ := tg.secrets[device].ReceiptVerifier()
	if err := env.Verify(rv, nil); err != nil {
		t.Fatalf("receipt does not verify: %v", err)
	}
	return r
}

func signed(t testing.TB, tg *testGateway, device string, seq, reg uint64) []byte {
	signer, _ := tg.secrets[device].Signer()
	var enc protocol.Encoder
	b, err := enc.AppendTicket(nil, &protocol.Ticket{Device: device, Seq: seq, Time: now(),
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCoAPOverDTLSWithPSK(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}, {"evse-1", "ed25519", "fleet"}})
	addr := tg.CoAPAddr()
	cc, err := dialCoAP(t, addr, "plug-1", tg.secrets["plug-1"].DTLSPSK())
	if err != nil {
		t.Fatalf("PSK handshake: %v", err)
	}
	defer cc.Close()
	resp := post(t, cc, 17, signed(t, tg, "plug-1", 1, 100))
	if resp.Code() != codes.Changed || coapReceipt(t, tg, "plug-1", resp).Status != protocol.StatusAccepted {
		t.Fatalf("first ticket: %v", resp.Code())
	}
	resp = post(t, cc, 17, signed(t, tg, "plug-1", 2, 2100))
	if r := coapReceipt(t, tg, "plug-1", resp); resp.Code() != codes.Changed || r.Charged != 600_000_000 {
		t.Fatalf("2 kWh: %v %+v", resp.Code(), r)
	}
	before, _ := tg.Books().Inspect(nil)
	// A's ticket over B's session is refused by the pipeline.
	resp = post(t, cc, 18, signed(t, tg, "evse-1", 1, 5))
	if r := coapReceipt(t, tg, "plug-1", resp); resp.Code() != codes.BadRequest || r.Reason != protocol.ReasonDeviceMismatch {
		t.Fatalf("evse-1's ticket as plug-1: %v %+v", resp.Code(), r)
	}
	// CoAP-level refusals: each a clear code, nothing stored.
	for _, tc := range []struct {
		name string
		do   func() *pool.Message
		want codes.Code
	}{
		{"text payload", func() *pool.Message { return post(t, cc, message.TextPlain, []byte("hello")) }, codes.UnsupportedMediaType},
		{"oversize", func() *pool.Message { return post(t, cc, 17, make([]byte, protocol.MaxTicketSize+1)) }, codes.RequestEntityTooLarge},
		{"garbage", func() *pool.Message { return post(t, cc, 17, []byte{0xd1, 0x84}) }, codes.BadRequest},
		{"GET", func() *pool.Message {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := cc.Get(ctx, "/t")
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, codes.MethodNotAllowed},
		{"unknown critical option", func() *pool.Message {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := cc.NewPostRequest(ctx, "/t", 17, bytes.NewReader(signed(t, tg, "plug-1", 3, 2200)))
			req.SetOptionUint32(message.OptionID(65001), 7) // odd: critical, and unknown
			r, err := cc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, codes.BadOption},
	} {
		if got := tc.do().Code(); got != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
		}
	}
	after, _ := tg.Books().Inspect(nil)
	if !reflect.DeepEqual(after.Reconcile, before.Reconcile) {
		t.Fatalf("refused requests changed the books")
	}
	// Wrong key and unknown identity: the handshake fails (driven with
	// pion directly, under a deadline).
	if err := pskHandshake(addr, "plug-1", []byte("0123456789abcdef0123456789abcdef")); err == nil {
		t.Fatal("a wrong PSK completed a handshake")
	}
	if err := pskHandshake(addr, "nobody", []byte("x")); err == nil {
		t.Fatal("an unknown identity completed a handshake")
	}
	if err := pskHandshake(addr, "plug-1", tg.secrets["plug-1"].DTLSPSK()); err != nil {
		t.Fatalf("the right PSK: %v", err)
	}
	final, _ := tg.Books().Inspect(nil)
	if final.Reconcile.Tickets != 2 {
		t.Fatalf("stored %d tickets; want the 2 accepted", final.Reconcile.Tickets)
	}
}

// TestHandshakeFloodDoesNotStopDevices: a bounded flood of handshakes with
// unknown identities from many source ports; an established device keeps
// being served and the flood is counted.
func TestHandshakeFloodDoesNotStopDevices(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.DTLS.HandshakeTimeout = 2 * time.Second
	})
	addr := tg.CoAPAddr()
	cc, err := dialCoAP(t, addr, "plug-1", tg.secrets["plug-1"].DTLSPSK())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// The flood runs until the device is done, bounded at 400 attempts.
	stop := make(chan struct{})
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempts.Add(1) <= 400 {
				select {
				case <-stop:
					return
				default:
				}
				bogusHandshake(addr)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the flood start first
	served := 0
	for seq := uint64(1); seq <= 20; seq++ {
		if resp := post(t, cc, 17, signed(t, tg, "plug-1", seq, 10*seq)); resp.Code() == codes.Changed {
			served++
		}
	}
	close(stop)
	wg.Wait()
	if served != 20 {
		t.Fatalf("the established device got %d of 20 answers during the flood", served)
	}
	t.Logf("20 of 20 tickets served during a flood of %d handshake attempts", min(attempts.Load(), 400))
	_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
	if !strings.Contains(m, `farthing_transport_events_total{event="rate_limited",transport="coaps"}`) ||
		!strings.Contains(m, `farthing_transport_events_total{event="psk_unknown_identity",transport="coaps"}`) {
		t.Fatalf("the flood was not counted:\n%s", grepLines(m, "transport"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// bogusHandshake makes a real DTLS handshake attempt with an unknown PSK
// identity from a fresh UDP socket (a new source port), giving up after a
// short deadline.
func bogusHandshake(addr string) {
	handshake(addr, 300*time.Millisecond, pskOptions("attacker", []byte("bogus"))...)
}

// TestCoapdevDevice: the firmware client over devicefw/coapdev.
func TestCoapdevDevice(t *testing.T) {
	tg := startGateway(t, []devSpec{{"modem-1", "ed25519", "fleet"}})
	s := tg.secrets["modem-1"]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: "modem-1", Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 4*protocol.MaxTicketSize)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := coapdev.Dial(coapdev.Config{Addr: tg.CoAPAddr(), Device: "modem-1", PSK: s.DTLSPSK(), Client: c})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var charged uint64
	for i := uint64(0); i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := d.Report(ctx, now(), []devicefw.Reading{{Meter: 0, Register: 1000 * i}})
		cancel()
		if err != nil || r.Status != protocol.StatusAccepted {
			t.Fatalf("report %d: %+v %v", i, r, err)
		}
		charged += r.Charged
	}
	if d.Pending() != 0 || charged != 2_700_000_000 {
		t.Fatalf("pending %d, charged %d; want 0 and 9 kWh at 0.30", d.Pending(), charged)
	}
}

// TestCoAPRetransmissionIsDeduplicated: a confirmable request retransmitted
// with the same message ID gets the first response again (RFC 7252 §4.5)
// without reaching the pipeline, which would have said "duplicate".
func TestCoAPRetransmissionIsDeduplicated(t *testing.T) {
	tg := startGateway(t, []devSpec{{"m-1", "hmac", "fleet"}})
	cc, err := dialCoAP(t, tg.CoAPAddr(), "m-1", tg.secrets["m-1"].DTLSPSK())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	post(t, cc, 17, signed(t, tg, "m-1", 1, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := signed(t, tg, "m-1", 2, 501)
	var got []protocol.Receipt
	for i := 0; i < 2; i++ {
		req, err := cc.NewPostRequest(ctx, "/t", 17, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetMessageID(4242)
		req.SetToken([]byte{1, 2, 3, 4})
		resp, err := cc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, coapReceipt(t, tg, "m-1", resp))
	}
	if got[0].Status != protocol.StatusAccepted || got[1] != got[0] {
		t.Fatalf("retransmission answered %+v after %+v; want the same accepted receipt", got[1], got[0])
	}
	rep, _ := tg.Books().Inspect(nil)
	if rep.Reconcile.Tickets != 2 {
		t.Fatalf("stored %d tickets", rep.Reconcile.Tickets)
	}
}

// TestCoAPRetryLaterIs503WithMaxAge: past the disk bound a ticket gets
// 5.03 with Max-Age and the retry-later receipt.
func TestCoAPRetryLaterIs503WithMaxAge(t *testing.T) {
	tg := startGateway(t, []devSpec{{"m-1", "hmac", "fleet"}})
	cc, err := dialCoAP(t, tg.CoAPAddr(), "m-1", tg.secrets["m-1"].DTLSPSK())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tg.Ingest().SetFull(true)
	resp := post(t, cc, 17, signed(t, tg, "m-1", 1, 1))
	r := coapReceipt(t, tg, "m-1", resp)
	maxAge, err := resp.GetOptionUint32(message.MaxAge)
	if resp.Code() != codes.ServiceUnavailable || r.Status != protocol.StatusRetryLater || r.Reason != protocol.ReasonStorageFull || err != nil || maxAge != 5 {
		t.Fatalf("retry later over CoAP: %v max-age %d (%v), %+v", resp.Code(), maxAge, err, r)
	}
}

// pskHandshake makes one PSK handshake from a fresh socket and reports
// whether it completed within 5 s.
func pskHandshake(addr, identity string, psk []byte) error {
	return handshake(addr, 5*time.Second, pskOptions(identity, psk)...)
}

func pskOptions(identity string, psk []byte) []piondtls.ClientOption {
	return []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
}

// handshake makes one DTLS handshake with pion from a fresh loopback
// socket and returns its error; the test owns the only handshake of the
// connection, so the deadline always holds.
func handshake(addr string, timeout time.Duration, opts ...piondtls.ClientOption) error {
	return handshakeBound(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, addr, timeout, opts...)
}

// handshakeBound is handshake from a socket bound to local.
func handshakeBound(local *net.UDPAddr, addr string, timeout time.Duration, opts ...piondtls.ClientOption) error {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", local)
	if err != nil {
		return err
	}
	defer pc.Close()
	c, err := piondtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.HandshakeContext(ctx)
}
