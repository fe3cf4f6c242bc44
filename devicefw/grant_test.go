package devicefw_test

import (
	"testing"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// grantAnswer is the gateway's answer to request req with grant g.
func grantAnswer(t testing.TB, k keys, req uint64, g protocol.Grant) []byte {
	var e protocol.Encoder
	b, err := e.AppendReceipt(nil, &protocol.Receipt{Device: "plug-1", Seq: req, Status: protocol.StatusAccepted, Time: 1_790_000_000_000, Grant: g}, k.receipt)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGrantOnTheDevice: the client asks, takes the answer, names the
// grant in its tickets, says when to serve, ask again and stop by itself,
// and forgets the grant once its release is answered.
func TestGrantOnTheDevice(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	if d := c.May(1_790_000_000_000, 0); d != devicefw.Stop {
		t.Fatalf("May without a grant = %v", d)
	}
	req, _, err := c.RequestGrant(nil, 0, 1000, 500, 0)
	if err != nil {
		t.Fatal(err)
	}
	var env protocol.Envelope
	var gr protocol.GrantRequest
	if err := protocol.ParseGrantRequest(req, &env, &gr); err != nil || env.Verify(k.ticket, nil) != nil || gr.Units != 500 || gr.Register != 1000 {
		t.Fatalf("grant request %+v, %v", gr, err)
	}
	g := protocol.Grant{ID: gr.Request, Meter: "energy_wh", Limit: 1500, Threshold: 1400, Reserved: 150, Expiry: 1_790_000_600_000,
		Validity: 600_000, Idle: 60_000, Final: protocol.FinalContinue, Grace: 20}
	if _, err := c.HandleReceipt(grantAnswer(t, k, gr.Request, g)); err != nil {
		t.Fatal(err)
	}
	now := uint64(1_790_000_010_000)
	for _, tc := range []struct {
		register uint64
		at       uint64
		want     devicefw.Decision
	}{
		{1200, now, devicefw.Serve}, {1400, now, devicefw.AskAgain}, {1510, now, devicefw.AskAgain}, {1520, now, devicefw.Stop},
		{1200, now + 60_000, devicefw.Stop}, // idle: no ticket for a minute
	} {
		if d := c.May(tc.at, tc.register); d != tc.want {
			t.Errorf("May(%d, %d) = %v; want %v", tc.at, tc.register, d, tc.want)
		}
	}
	b, _, err := c.Report(now+30_000, []devicefw.Reading{{Meter: 0, Register: 1300}})
	if err != nil {
		t.Fatal(err)
	}
	if _, tk, err := strict.DecodeTicket(b); err != nil || tk.Grant != gr.Request {
		t.Fatalf("ticket under the grant names grant %d, %v; want %d", tk.Grant, err, gr.Request)
	}
	if d := c.May(now+80_000, 1300); d != devicefw.Serve {
		t.Fatalf("May after a ticket renewed the idle timer = %v", d)
	}
	if d := c.May(1_790_000_600_000, 1300); d != devicefw.Stop {
		t.Fatalf("May at the expiry = %v", d)
	}
	rel, _, err := c.Release(nil, 1300)
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.Release
	if err := protocol.ParseRelease(rel, &env, &r); err != nil || r.Grant != gr.Request {
		t.Fatalf("release %+v, %v", r, err)
	}
	closed := g
	closed.Reserved, closed.Closed = 0, protocol.GrantReleased
	if _, err := c.HandleReceipt(grantAnswer(t, k, r.Request, closed)); err != nil {
		t.Fatal(err)
	}
	if g, _ := c.Grant(); g.ID != 0 {
		t.Fatalf("grant kept after its release: %+v", g)
	}
}
