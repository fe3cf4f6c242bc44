package gateway_test

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	return getBody(t, http.DefaultClient, url)
}

func TestMetricsAndHealth(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	d := connectDevice(t, tg, "plug-1")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1}})
	d.next(t)
	d.Close() // one session per device: the raw client below takes its place
	rc, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	rc.publish(t, "plug-1", []byte("garbage"))
	rc.receipt(t, tg)
	base := "http://" + tg.HTTPAddr()
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %q", code, body)
	}
	_, m := httpGet(t, base+"/metrics")
	for _, want := range []string{
		`farthing_tickets_total{reason="",status="accepted"} 1`,
		`farthing_tickets_total{reason="unexpected_tag",status="rejected"} 1`,
		`farthing_tickets_total{reason="register_backwards",status="rejected"} 0`,
		"farthing_commit_seconds_bucket", "farthing_verify_seconds_bucket", "farthing_store_bytes", "farthing_ticket_seconds_bucket",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// What the storage took: the accepted ticket's journal record and its
	// sync, and the process's bytes written to disk.
	for _, name := range []string{"farthing_store_syncs_total", "farthing_journal_bytes_total", "farthing_written_bytes_total"} {
		if v := metricValue(m, name); v <= 0 {
			t.Errorf("/metrics: %s = %v after a ticket was accepted; want > 0", name, v)
		}
	}
}

// metricValue is the value of an unlabelled metric on a /metrics page;
// -1 if it is not there.
func metricValue(page, name string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestRegistryReloadsWithoutRestart: a device added to devices.yaml while
// the gateway runs can connect and is accepted; a broken file is refused
// and the gateway keeps its devices.
func TestRegistryReloadsWithoutRestart(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	old := connectDevice(t, tg, "plug-1")
	path := tg.cfg.Devices
	rf, err := registry.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e, s, _ := registry.NewDevice("plug-2", "ed25519", "fleet", "utility", map[string]string{"energy_wh": "energy"})
	rf.Devices = append(rf.Devices, e)
	tg.secrets["plug-2"] = s
	if err := registry.WriteFile(path, rf); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reload(); err != nil { // what SIGHUP does; the file watch would too
		t.Fatal(err)
	}
	d := connectDevice(t, tg, "plug-2")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 5}})
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("new device after reload: %+v", r)
	}
	// An existing connection keeps working across the reload.
	old.Report(now(), []devicefw.Reading{{Meter: 0, Register: 5}})
	if r := old.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("old device after reload: %+v", r)
	}
	// A broken registry is refused; the devices stay.
	os.WriteFile(path, []byte("devices:\n  - {id: x, key_type: rsa}\n"), 0o600)
	if err := tg.Reload(); !errors.Is(err, gateway.ErrRegistry) {
		t.Fatalf("Reload of a broken registry = %v", err)
	}
	old.Report(now(), []devicefw.Reading{{Meter: 0, Register: 9}})
	if r := old.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("device after a refused reload: %+v", r)
	}
	// One bad entry among good ones: the good ones load, the bad one is
	// refused (logged, counted, in /readyz's detail), and a device that
	// was serving keeps its previous entry rather than going down.
	typo := *rf
	typo.Devices = append([]registry.Entry{}, rf.Devices...)
	typo.Devices[1].Account = "nosuch"
	e3, s3, _ := registry.NewDevice("plug-3", "hmac", "prepaid-1", "utility", map[string]string{"energy_wh": "energy"})
	typo.Devices = append(typo.Devices, e3)
	tg.secrets["plug-3"] = s3
	if err := registry.WriteFile(path, &typo); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reload(); err != nil {
		t.Fatalf("Reload with one bad entry = %v; want the rest loaded", err)
	}
	reg := tg.Ingest().Snapshot().Registry
	if reg.Device("plug-3") == nil || reg.Device("plug-2") == nil || reg.Device("plug-2").Account != "fleet" {
		t.Fatalf("after a reload with plug-2's account mistyped: plug-3 %v, plug-2 %+v; want both, plug-2 on its old terms", reg.Device("plug-3"), reg.Device("plug-2"))
	}
	base := "http://" + tg.HTTPAddr()
	if code, body := httpGet(t, base+"/readyz"); code != 200 || !strings.Contains(body, `devices refused: 1: plug-2 (account: account "nosuch" is not configured; serving with its previous entry)`) {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if _, m := httpGet(t, base+"/metrics"); metricValue(m, "farthing_devices_refused") != 1 {
		t.Errorf("farthing_devices_refused = %v; want 1", metricValue(m, "farthing_devices_refused"))
	}
	// The file watch picks up a fixed file by itself.
	rf.Devices = rf.Devices[:1]
	registry.WriteFile(path, rf)
	deadline := time.Now().Add(10 * time.Second)
	for tg.Ingest().Snapshot().Registry.Device("plug-2") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not notice devices.yaml changed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"mqtt: {mode: carrier-pigeon}\n", "mqtt.mode"},
		{"colour: red\n", "colour"},
		{"accounts:\n  - {id: a, kind: prepaid, currency: euro}\n", "accounts[0]"},
		{"accounts:\n  - {id: a, kind: prepaid, currency: EUR, credit_limit: \"5\"}\n", "credit_limit"},
		{"providers:\n  - {id: p, threshold: lots}\n", "providers[0]"},
		{"gateway_id: \"gw/1\"\n", "gateway_id"},
		{"mqtt: {mode: external}\n", "mqtt.broker"},
		{"mqtt: {listen: [1, 2]}\n", "c.yaml:1: mqtt.listen: a list where a string is wanted"},
		{"accounts: {id: x}\n", "c.yaml:1: accounts: a mapping where a list"},
		{"accounts:\n  - id: a\n    kind: [x]\n", "c.yaml:3: accounts[0].kind: a list"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o600)
		_, err := gateway.LoadConfig(p)
		if !errors.Is(err, gateway.ErrConfig) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "gateway.") {
			t.Errorf("config %q: %v; want an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

// TestDiskBoundAnswersRetryLater: when the state file passes its bound,
// new tickets are answered "retry later" and nothing already accepted is
// touched.
func TestDiskBoundAnswersRetryLater(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}})
	d := connectDevice(t, tg, "plug-1")
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1}})
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatal(r)
	}
	before, _ := tg.Books().Inspect(nil)
	tg.Ingest().SetFull(true) // what the disk watch does past limits.max_store_bytes or min_free_bytes
	d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 2}})
	r := d.next(t)
	if r.Status != protocol.StatusRetryLater || r.Reason != protocol.ReasonStorageFull || r.RetryAfter == 0 {
		t.Fatalf("ticket past the disk bound: %+v", r)
	}
	if d.Pending() != 1 {
		t.Fatalf("the device dropped a retry-later ticket")
	}
	after, _ := tg.Books().Inspect(nil)
	if !reflect.DeepEqual(after.Reconcile, before.Reconcile) {
		t.Fatalf("a refused ticket changed the books")
	}
	if code, _ := httpGet(t, "http://"+tg.HTTPAddr()+"/readyz"); code != 503 {
		t.Errorf("/readyz = %d while full; want 503", code)
	}
	tg.Ingest().SetFull(false)
	d.ResendPending()
	if r := d.next(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("resend after space came back: %+v", r)
	}
}

// TestStateFileBoundIsWatched: past limits.max_store_bytes the gateway
// turns to "retry later" by itself.
func TestStateFileBoundIsWatched(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "prepaid-1"}}, func(c *gateway.Config) { c.Limits.MaxStoreBytes = 1 })
	d := connectDevice(t, tg, "plug-1")
	deadline := time.Now().Add(10 * time.Second)
	for i := uint64(1); ; i++ {
		d.Report(now(), []devicefw.Reading{{Meter: 0, Register: i}})
		r := d.next(t)
		if r.Status == protocol.StatusRetryLater && r.Reason == protocol.ReasonStorageFull {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a state file over a 1-byte bound was not noticed: last receipt %+v", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// More refused tickets add no log lines: a full store is logged when it
	// fills, once a minute while it stays full, and when it empties.
	for i := 0; i < 30; i++ {
		d.Report(now(), []devicefw.Reading{{Meter: 0, Register: 1000 + uint64(i)}})
		if r := d.next(t); r.Status != protocol.StatusRetryLater {
			t.Fatalf("ticket %d while full: %+v", i, r)
		}
	}
	logs := tg.logs.String()
	if n := strings.Count(logs, "ticket refused"); n != 0 {
		t.Errorf("%d per-ticket log lines for a full store; want a summary", n)
	}
	if n := strings.Count(logs, "storage"); n < 1 || n > 2 {
		t.Errorf("%d storage log lines for 30+ refused tickets; want 1 or 2:\n%s", n, logs)
	}
}
