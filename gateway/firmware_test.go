package gateway_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// TestTinyGoFirmwareOnAnEmulatedCortexM: the TinyGo firmware
// (devicefw/examples/emulated), linked for a Cortex-M3 against Debian's
// picolibc and libgcc, runs in qemu-system-arm (lm3s6965evb). Its HMAC
// tickets, its payword chain's commitment and its paywords, read off the
// emulated UART, go to a real gateway over MQTT and are each accepted
// with the charge their registers call for; the gateway's receipt for
// the first ticket, handed back to the emulated device, is verified there
// (and the same receipt with a bit changed is refused). The stack each
// operation took on the device is logged.
func TestTinyGoFirmwareOnAnEmulatedCortexM(t *testing.T) {
	t.Parallel()
	elf := filepath.Join(t.TempDir(), "firmware.elf")
	if out, err := exec.Command("bash", "../scripts/firmware-emulated.sh", "./devicefw/examples/emulated", elf, "-stack-size=8KB").CombinedOutput(); err != nil {
		t.Fatalf("firmware-emulated.sh: %v\n%s", err, out)
	}
	master := make([]byte, 32) // the firmware's fixed master secret: 1..32
	for i := range master {
		master[i] = byte(i + 1)
	}
	tg := startGateway(t, []devSpec{{"mcu-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		f, err := registry.ReadFile(c.Devices)
		if err != nil {
			t.Fatal(err)
		}
		f.Devices[0].Secret = hex.EncodeToString(master)
		if err := registry.WriteFile(c.Devices, f); err != nil {
			t.Fatal(err)
		}
	})
	tg.secrets["mcu-1"] = registry.Secrets{Master: master}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	lines := runFirmware(t, elf, "tickets", now)
	rc, err := connectRaw(t, tg, "mcu-1", tg.secrets["mcu-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	// Registers 1,000 (the meter's first: nothing charged), 1,500 and
	// 2,100 Wh at 0.30 EUR/kWh; the chain from 2,100 in 1 Wh steps, then
	// paywords at 10, 25 and 60.
	want := []uint64{0, 150_000_000, 180_000_000, 0, 3_000_000, 4_500_000, 10_500_000}
	if len(lines) != len(want) {
		t.Fatalf("the firmware printed %d messages; want %d:\n%+v", len(lines), len(want), lines)
	}
	var first []byte
	for i, l := range lines {
		msg, _ := hex.DecodeString(l.hex)
		rc.publish(t, "mcu-1", msg)
		b := rawReceipt(t, rc)
		r := verifiedReceipt(t, tg, b)
		if r.Status != protocol.StatusAccepted || r.Charged != want[i] {
			t.Fatalf("%s %d: %+v; want accepted, %d charged", l.kind, i, r, want[i])
		}
		if i == 0 {
			first = b
		}
		t.Logf("%s: %d bytes, %d bytes of stack on the device, charged %d", l.kind, len(msg), l.stack, r.Charged)
	}
	out := runFirmware(t, elf, "receipt", now, hex.EncodeToString(first))
	if len(out) != 1 || out[0].kind != "receipt" {
		t.Fatalf("the receipt check printed %+v", out)
	}
	t.Logf("the gateway's receipt verified on the emulated device: %d bytes of stack", out[0].stack)
}

// fwLine is one message the firmware printed.
type fwLine struct {
	kind, hex string
	stack     int
}

// runFirmware runs the firmware in QEMU with args and returns what it
// printed; it fails the test if the firmware exits with an error.
func runFirmware(t *testing.T, elf string, args ...string) []fwLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := "enable=on,target=native,arg=emulated"
	for _, a := range args {
		cfg += ",arg=" + a
	}
	out, err := exec.CommandContext(ctx, "qemu-system-arm", "-machine", "lm3s6965evb", "-nographic", "-monitor", "none",
		"-semihosting-config", cfg, "-kernel", elf).Output()
	if err != nil {
		t.Fatalf("qemu-system-arm %v: %v\n%s", args, err, out)
	}
	var lines []fwLine
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		i := strings.Index(l, " stack ")
		if i < 0 {
			continue
		}
		st, _ := strconv.Atoi(strings.Fields(l[i+7:])[0])
		lines = append(lines, fwLine{kind: f[0], hex: f[1], stack: st})
	}
	return lines
}

// rawReceipt is the next receipt's bytes.
func rawReceipt(t *testing.T, rc *rawClient) []byte {
	t.Helper()
	select {
	case b := <-rc.receipts:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt within 10s")
		return nil
	}
}

// verifiedReceipt parses b and checks its MAC with the device's receipt key.
func verifiedReceipt(t *testing.T, tg *testGateway, b []byte) protocol.Receipt {
	t.Helper()
	rv, _ := tg.secrets["mcu-1"].ReceiptVerifier()
	var env protocol.Envelope
	var r protocol.Receipt
	if err := protocol.ParseReceipt(b, &env, &r); err != nil {
		t.Fatalf("receipt: %v", err)
	}
	if err := env.Verify(rv, nil); err != nil {
		t.Fatal(fmt.Errorf("receipt MAC: %w", err))
	}
	return r
}
