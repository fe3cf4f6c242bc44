package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCDevicesBilledExactly: the two example devices written in C
// (devicefw/c/examples), built with gcc under AddressSanitizer and
// UndefinedBehaviorSanitizer, run against a real farthingd: one over MQTT
// with libmosquitto, one over CoAP/DTLS with libcoap and its PSK. Each
// sends its tickets, gets its receipts and checks their MACs; the MQTT
// device runs twice, its sequence reservation kept in a file between the
// runs (the flash hook). The gateway's books charge exactly the usage the
// devices metered, and the receipts add up to it.
func TestCDevicesBilledExactly(t *testing.T) {
	t.Parallel()
	bin := buildDaemon(t)
	mqttDev, coapDev := buildCExample(t, "mqtt_device", "libmosquitto"), buildCExample(t, "coap_device", "libcoap-3-openssl")
	g := newGatewayDir(t, []string{"c-mqtt", "c-coap"}, "", "")
	dtls := freeAddr(t, "udp")
	conf, _ := os.ReadFile(g.config)
	os.WriteFile(g.config, []byte(strings.Replace(string(conf), `dtls: {listen: "off"}`, fmt.Sprintf("dtls: {listen: %q}", dtls), 1)), 0o600)
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	host, mport, _ := strings.Cut(g.mqtt, ":")
	_, cport, _ := strings.Cut(dtls, ":")
	seqs := t.TempDir()
	var charged uint64
	run := func(prog, port, dev, start, step, count string) {
		t.Helper()
		cmd := exec.Command(prog, host, port, dev, hex.EncodeToString(g.secrets[dev].Master), filepath.Join(seqs, dev+".seq"), "energy_wh", start, step, count)
		cmd.Env = append(os.Environ(), "ASAN_OPTIONS=detect_leaks=0") // the libraries' own allocations at exit are not the client's
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(prog), dev, err, out)
		}
		lines := regexp.MustCompile(`(?m)^ticket \d+ register \d+ status 0 reason 0 charged (\d+)`).FindAllStringSubmatch(string(out), -1)
		if n, _ := strconv.Atoi(count); len(lines) != n {
			t.Fatalf("%s %s: %d tickets accepted of %s:\n%s", filepath.Base(prog), dev, len(lines), count, out)
		}
		for _, l := range lines {
			c, _ := strconv.ParseUint(l[1], 10, 64)
			charged += c
		}
		t.Logf("%s %s:\n%s", filepath.Base(prog), dev, out)
	}
	run(mqttDev, mport, "c-mqtt", "1000", "250", "8") // a baseline at 1,250 Wh, then 7 × 250 Wh
	run(coapDev, cport, "c-coap", "0", "500", "6")    // a baseline at 500 Wh, then 5 × 500 Wh
	run(mqttDev, mport, "c-mqtt", "3000", "100", "2") // the device again, its seqs from the file: 2 × 100 Wh
	const usage = 7*250 + 5*500 + 2*100               // Wh, at 0.30 EUR per kWh: 300,000 nanos per Wh
	if charged != usage*300_000 {
		t.Fatalf("the receipts charged %d nanos; the devices used %d Wh (%d nanos)", charged, usage, usage*300_000)
	}
	view := showAccount(t, g.data, "fleet")
	if -view.Balance != usage*300_000 {
		t.Fatalf("the books charged the account %d nanos; the devices used %d nanos' worth", -view.Balance, usage*300_000)
	}
	if out, err := farthingCLI(t, "inspect", "--data", g.data); err != nil || !strings.Contains(out, `"balanced": true`) {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
}

// buildCExample builds devicefw/c/examples/NAME.c with the C client and
// the pkg-config package lib, with gcc under ASan and UBSan.
func buildCExample(t *testing.T, name, lib string) string {
	t.Helper()
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", lib).Output()
	if err != nil {
		t.Fatalf("pkg-config %s: %v (scripts/test.sh installs its -dev package)", lib, err)
	}
	out := filepath.Join(t.TempDir(), name)
	args := append([]string{"-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
		"-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o", out,
		"../../devicefw/c/examples/" + name + ".c", "../../devicefw/c/farthing.c"}, strings.Fields(string(flags))...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, b)
	}
	return out
}
