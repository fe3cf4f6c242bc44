package devicefw_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// flash is a SeqStore that counts writes and can lose power.
type flash struct {
	saved  uint64
	writes int
	fail   bool
}

func (f *flash) LoadSeq() (uint64, error) { return f.saved, nil }
func (f *flash) SaveSeq(v uint64) error {
	if f.fail {
		return errors.New("flash worn out")
	}
	f.saved = v
	f.writes++
	return nil
}

type keys struct {
	ticket, receipt *protocol.HMAC
	ed              *protocol.Ed25519Signer
	edv             *protocol.Ed25519Verifier
}

func testKeys(t testing.TB) keys {
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(i * 7)
	}
	tk, _ := protocol.DeriveKey(master, protocol.PurposeTicket)
	rk, _ := protocol.DeriveKey(master, protocol.PurposeReceipt)
	var k keys
	var err error
	if k.ticket, err = protocol.NewHMAC(tk); err != nil {
		t.Fatal(err)
	}
	if k.receipt, err = protocol.NewHMAC(rk); err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(master)
	k.ed, _ = protocol.NewEd25519Signer(priv)
	k.edv, _ = protocol.NewEd25519Verifier(priv.Public().(ed25519.PublicKey))
	return k
}

func newClient(t testing.TB, k keys, f *flash, slots int) *devicefw.Client {
	c, err := devicefw.New(devicefw.Config{
		Device:   "plug-1",
		Meters:   []string{"energy_wh", "on_ms", "relay_ops"},
		Signer:   k.ticket,
		Receipts: k.receipt,
		Seq:      f,
		Pending:  make([]byte, slots*256),
		SlotSize: 256,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// receipt is what a gateway would answer.
func receipt(t testing.TB, k keys, seq uint64, st protocol.Status, reason protocol.Reason) []byte {
	var enc protocol.Encoder
	r := protocol.Receipt{Device: "plug-1", Seq: seq, Status: st, Reason: reason, Charged: 1500, Balance: 98_500, HasBalance: true, Currency: "EUR"}
	b, err := enc.AppendReceipt(nil, &r, k.receipt)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSeqNeverRepeatsAcrossPowerLoss(t *testing.T) {
	k := testKeys(t)
	f := &flash{}
	seen := map[uint64]bool{}
	var last uint64
	for boot := 0; boot < 5; boot++ {
		c := newClient(t, k, f, 4)
		// Each boot uses a different number of seqs, then loses power.
		for i := 0; i < 37*(boot+1); i++ {
			_, seq, err := c.Build(nil, 1_790_000_000_000, []devicefw.Reading{{Meter: 0, Register: uint64(i)}})
			if err != nil {
				t.Fatal(err)
			}
			if seen[seq] || seq <= last {
				t.Fatalf("boot %d: seq %d repeated or not increasing (last %d)", boot, seq, last)
			}
			seen[seq], last = true, seq
		}
	}
	// 555 tickets with a reservation of 100: far fewer writes than tickets.
	if f.writes > 15 {
		t.Errorf("flash written %d times for %d tickets; want at most 15", f.writes, len(seen))
	}
}

func TestSeqStoreFailureIssuesNothing(t *testing.T) {
	k := testKeys(t)
	f := &flash{fail: true}
	c := newClient(t, k, f, 4)
	if _, _, err := c.Build(nil, 1, []devicefw.Reading{{Meter: 0, Register: 1}}); !errors.Is(err, devicefw.ErrSeqStore) {
		t.Fatalf("Build with failing flash = %v; want ErrSeqStore", err)
	}
	f.fail = false
	_, seq, err := c.Build(nil, 1, []devicefw.Reading{{Meter: 0, Register: 1}})
	if err != nil || seq != 1 {
		t.Fatalf("Build after flash recovered = seq %d, %v; want 1", seq, err)
	}
}

func TestReportTicketDecodesAtGateway(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	msg, seq, err := c.Report(1_790_000_000_000, []devicefw.Reading{{Meter: 0, Register: 1234}, {Meter: 2, Register: 7}})
	if err != nil {
		t.Fatal(err)
	}
	env, tk, err := strict.DecodeTicket(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Verify(k.ticket, nil); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := protocol.Ticket{Device: "plug-1", Seq: seq, Time: 1_790_000_000_000,
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: 1234}, {Meter: "relay_ops", Register: 7}}}
	if !reflect.DeepEqual(tk, want) {
		t.Fatalf("gateway decoded %+v; want %+v", tk, want)
	}
}

func TestNewerTicketSupersedesCoveredOnes(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 8)
	r := func(m uint8, v uint64) devicefw.Reading { return devicefw.Reading{Meter: m, Register: v} }
	_, s1, _ := c.Report(1, []devicefw.Reading{r(0, 10), r(1, 5)}) // energy+on
	_, s2, _ := c.Report(2, []devicefw.Reading{r(2, 1)})           // relay only
	_, s3, _ := c.Report(3, []devicefw.Reading{r(0, 20)})          // energy only: s1 still needed for on_ms
	if got := pendingSeqs(c); !reflect.DeepEqual(got, []uint64{s1, s2, s3}) {
		t.Fatalf("pending = %v; want %v", got, []uint64{s1, s2, s3})
	}
	_, s4, _ := c.Report(4, []devicefw.Reading{r(1, 9), r(2, 2)}) // on+relay: now s1 (energy by s3, on by s4) and s2 are covered
	if got := pendingSeqs(c); !reflect.DeepEqual(got, []uint64{s3, s4}) {
		t.Fatalf("pending after covering report = %v; want %v", got, []uint64{s3, s4})
	}
}

func TestEpochChangeDoesNotSupersede(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	_, s1, _ := c.Report(1, []devicefw.Reading{{Meter: 0, Register: 500}})
	c.SetEpoch(1) // registers restarted
	msg, s2, err := c.Report(2, []devicefw.Reading{{Meter: 0, Register: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pendingSeqs(c); !reflect.DeepEqual(got, []uint64{s1, s2}) {
		t.Fatalf("pending after epoch change = %v; want both %v", got, []uint64{s1, s2})
	}
	_, tk, err := strict.DecodeTicket(msg)
	if err != nil || tk.Epoch != 1 {
		t.Fatalf("ticket after SetEpoch(1): epoch %d, %v", tk.Epoch, err)
	}
	_, s3, _ := c.Report(3, []devicefw.Reading{{Meter: 0, Register: 9}})
	if got := pendingSeqs(c); !reflect.DeepEqual(got, []uint64{s1, s3}) {
		t.Fatalf("pending = %v; want the old epoch's %d and the newest %d", got, s1, s3)
	}
}

func pendingSeqs(c *devicefw.Client) []uint64 {
	var out []uint64
	for seq, _, ok := c.NextPending(0); ok; seq, _, ok = c.NextPending(seq) {
		out = append(out, seq)
	}
	return out
}

func TestRingFullKeepsEverythingNeeded(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 3)
	r := func(m uint8, v uint64) []devicefw.Reading { return []devicefw.Reading{{Meter: m, Register: v}} }
	c.Report(1, r(0, 1))
	c.Report(2, r(1, 1))
	c.Report(3, r(2, 1))
	// Three meters, three slots, nothing covers anything: a fourth meter
	// set cannot be kept without losing one of them.
	if _, _, err := c.Report(4, []devicefw.Reading{{Meter: 0, Register: 2}, {Meter: 1, Register: 2}}); err != nil {
		// energy+on covers slots 1 and 2: they are evicted to make room.
		t.Fatalf("Report that covers older tickets = %v", err)
	}
	if n := c.Pending(); n != 2 {
		t.Fatalf("pending = %d; want 2 (relay and the covering ticket)", n)
	}
	c.Report(5, r(2, 2)) // supersedes relay
	c.Report(6, r(1, 3))
	c.Report(7, r(0, 3))
	if _, _, err := c.Report(8, []devicefw.Reading{{Meter: 0, Register: 9}}); err != nil {
		t.Fatalf("Report of a meter a pending ticket has = %v; want it kept by superseding", err)
	}
}

func TestPendingFull(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 2)
	c.Report(1, []devicefw.Reading{{Meter: 0, Register: 1}})
	c.Report(2, []devicefw.Reading{{Meter: 1, Register: 1}})
	next := c.NextSeq()
	if _, _, err := c.Report(3, []devicefw.Reading{{Meter: 2, Register: 1}}); !errors.Is(err, devicefw.ErrPendingFull) {
		t.Fatalf("Report into a full ring = %v; want ErrPendingFull", err)
	}
	if c.NextSeq() != next {
		t.Errorf("a refused Report used a seq")
	}
}

func TestHandleReceipt(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	_, s1, _ := c.Report(1, []devicefw.Reading{{Meter: 0, Register: 1}})
	_, s2, _ := c.Report(2, []devicefw.Reading{{Meter: 1, Register: 1}})

	// Retry-later keeps the ticket pending.
	r, err := c.HandleReceipt(receipt(t, k, s1, protocol.StatusRetryLater, protocol.ReasonStorageFull))
	if err != nil || r.Status != protocol.StatusRetryLater || c.Pending() != 2 {
		t.Fatalf("retry-later receipt: %+v, %v, pending %d", r, err, c.Pending())
	}
	// Accepted frees it and exposes charge and balance.
	r, err = c.HandleReceipt(receipt(t, k, s1, protocol.StatusAccepted, 0))
	if err != nil || r.Charged != 1500 || !r.HasBalance || r.Balance != 98_500 || r.Currency != "EUR" || c.Pending() != 1 {
		t.Fatalf("accepted receipt: %+v, %v, pending %d", r, err, c.Pending())
	}
	// Repeated receipt: valid but nothing pending.
	if _, err = c.HandleReceipt(receipt(t, k, s1, protocol.StatusAccepted, 0)); !errors.Is(err, devicefw.ErrNotPending) {
		t.Fatalf("repeated receipt = %v; want ErrNotPending", err)
	}
	// Forged receipt (another key): refused, nothing changes.
	forger, _ := protocol.NewHMAC(make([]byte, 32))
	var enc protocol.Encoder
	forged, _ := enc.AppendReceipt(nil, &protocol.Receipt{Device: "plug-1", Seq: s2, Status: protocol.StatusAccepted}, forger)
	if _, err = c.HandleReceipt(forged); !errors.Is(err, protocol.ErrBadSignature) || c.Pending() != 1 {
		t.Fatalf("forged receipt = %v, pending %d; want ErrBadSignature, 1", err, c.Pending())
	}
	// Receipt for another device, correctly MAC'd: refused.
	other, _ := enc.AppendReceipt(nil, &protocol.Receipt{Device: "plug-2", Seq: s2, Status: protocol.StatusAccepted}, k.receipt)
	if _, err = c.HandleReceipt(other); !errors.Is(err, devicefw.ErrWrongDevice) || c.Pending() != 1 {
		t.Fatalf("receipt for another device = %v; want ErrWrongDevice", err)
	}
	// Garbage: refused with a reason.
	if _, err = c.HandleReceipt([]byte{0xd1, 0x84}); protocol.ReasonOf(err) != protocol.ReasonMalformed {
		t.Fatalf("garbage receipt = %v; want malformed", err)
	}
	// Rejected is final too.
	r, err = c.HandleReceipt(receipt(t, k, s2, protocol.StatusRejected, protocol.ReasonUnknownMeter))
	if err != nil || r.Reason != protocol.ReasonUnknownMeter || c.Pending() != 0 {
		t.Fatalf("rejected receipt: %+v, %v, pending %d", r, err, c.Pending())
	}
}

func TestHandleReceiptAllocatesNothing(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	_, seq, _ := c.Report(1, []devicefw.Reading{{Meter: 0, Register: 1}})
	b := receipt(t, k, seq, protocol.StatusRetryLater, protocol.ReasonOverloaded)
	c.HandleReceipt(b) // first call sets the currency string once
	if n := testing.AllocsPerRun(100, func() { c.HandleReceipt(b) }); n != 0 {
		t.Errorf("HandleReceipt allocates %v times; want 0", n)
	}
}

func TestConfigRefused(t *testing.T) {
	k := testKeys(t)
	good := devicefw.Config{Device: "d", Meters: []string{"m"}, Signer: k.ticket, Receipts: k.receipt, Seq: &flash{}}
	for name, mutate := range map[string]func(*devicefw.Config){
		"bad device":   func(c *devicefw.Config) { c.Device = "a/b" },
		"no meters":    func(c *devicefw.Config) { c.Meters = nil },
		"dup meters":   func(c *devicefw.Config) { c.Meters = []string{"m", "m"} },
		"no signer":    func(c *devicefw.Config) { c.Signer = nil },
		"no seq store": func(c *devicefw.Config) { c.Seq = nil },
		"tiny slots":   func(c *devicefw.Config) { c.SlotSize = 10 },
		"17 meters":    func(c *devicefw.Config) { c.Meters = make([]string, 17) },
	} {
		cfg := good
		mutate(&cfg)
		if _, err := devicefw.New(cfg); !errors.Is(err, devicefw.ErrConfig) {
			t.Errorf("%s: New = %v; want ErrConfig", name, err)
		}
	}
	if _, err := devicefw.New(good); err != nil {
		t.Errorf("New(good) = %v", err)
	}
}

func TestUnknownMeterIndex(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 2)
	if _, _, err := c.Build(nil, 1, []devicefw.Reading{{Meter: 3, Register: 1}}); !errors.Is(err, devicefw.ErrUnknownMeter) {
		t.Errorf("Build with meter 3 of 3 = %v; want ErrUnknownMeter", err)
	}
}

func TestSlotTooSmall(t *testing.T) {
	k := testKeys(t)
	c, _ := devicefw.New(devicefw.Config{Device: "plug-1", Meters: []string{"energy_wh"}, Signer: k.ed, Receipts: k.edv,
		Seq: &flash{}, Pending: make([]byte, 2*64), SlotSize: 64, Account: "an-account-with-a-fairly-long-name"})
	if _, _, err := c.Report(1, []devicefw.Reading{{Meter: 0, Register: 1}}); !errors.Is(err, devicefw.ErrSlotTooSmall) {
		t.Errorf("Report of a ticket larger than a slot = %v; want ErrSlotTooSmall", err)
	}
	if c.Pending() != 0 {
		t.Errorf("a ticket that did not fit is pending")
	}
}

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReceiptForUnreadableTicket: a receipt with seq 0 (the gateway could
// not read the ticket) is returned with ErrNotPending and frees nothing.
func TestReceiptForUnreadableTicket(t *testing.T) {
	k := testKeys(t)
	c := newClient(t, k, &flash{}, 4)
	c.Report(1, []devicefw.Reading{{Meter: 0, Register: 1}})
	r, err := c.HandleReceipt(receipt(t, k, 0, protocol.StatusRejected, protocol.ReasonMalformed))
	if !errors.Is(err, devicefw.ErrNotPending) || r.Reason != protocol.ReasonMalformed || c.Pending() != 1 {
		t.Fatalf("seq-0 receipt: %+v, %v, pending %d", r, err, c.Pending())
	}
}
