package devicefw_test

import (
	"reflect"
	"testing"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// FuzzDeviceTicketDecodes is the differential test between the two sides:
// every ticket the firmware client builds must decode with the gateway's
// strict decoder to exactly the fields it was built from, and verify.
func FuzzDeviceTicketDecodes(f *testing.F) {
	f.Add("plug-1", "energy_wh", "on_ms", uint64(1_790_000_000_000), uint64(0), uint64(123), uint64(456), uint8(3), "", "", false)
	f.Add("d", "m", "n", uint64(1), uint64(1<<64-1), uint64(1<<64-1), uint64(0), uint8(1), "acct-9", "sess.1", true)
	f.Add("x-_.Z9", "a", "b", uint64(23), uint64(24), uint64(255), uint64(256), uint8(2), "a", "", true)
	f.Fuzz(func(t *testing.T, device, m0, m1 string, now, epoch, r0, r1 uint64, mask uint8, account, session string, ed bool) {
		k := testKeys(t)
		cfg := devicefw.Config{Device: device, Meters: []string{m0, m1}, Signer: k.ticket, Receipts: k.receipt,
			Seq: &flash{saved: now % 1000}, Epoch: epoch, Account: account, Session: session}
		if ed {
			cfg.Signer = k.ed
		}
		c, err := devicefw.New(cfg)
		if err != nil {
			return // the client refuses what the wire format cannot carry
		}
		var rs []devicefw.Reading
		if mask&1 != 0 {
			rs = append(rs, devicefw.Reading{Meter: 0, Register: r0})
		}
		if mask&2 != 0 {
			rs = append(rs, devicefw.Reading{Meter: 1, Register: r1})
		}
		msg, seq, err := c.Build(nil, now, rs)
		if err != nil {
			// Only input the format forbids may be refused.
			tk := protocol.Ticket{Device: device, Seq: 1, Time: now, Epoch: epoch, Account: account, Session: session,
				Readings: []protocol.Reading{{Meter: m0}}}
			if len(rs) > 0 && tk.Validate() == nil {
				t.Fatalf("Build refused a valid ticket: %v", err)
			}
			return
		}
		env, got, err := strict.DecodeTicket(msg)
		if err != nil {
			t.Fatalf("gateway refused the device's ticket %x: %v", msg, err)
		}
		var v protocol.Verifier = k.ticket
		if ed {
			v = k.edv
		}
		if err := env.Verify(v, nil); err != nil {
			t.Fatalf("gateway could not verify the device's ticket: %v", err)
		}
		want := protocol.Ticket{Device: device, Seq: seq, Time: now, Epoch: epoch, Account: account, Session: session}
		for _, r := range rs {
			want.Readings = append(want.Readings, protocol.Reading{Meter: cfg.Meters[r.Meter], Register: r.Register})
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("gateway decoded %+v; device built %+v", got, want)
		}
	})
}
