package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// TestBadDeviceEntryDoesNotStopTheGateway: with no gateway running, an
// offline `device add` with an unknown account is refused against the
// gateway's configuration files, with nothing written. A registry that
// has a bad entry anyway (edited by hand) does not stop the gateway: it
// starts, loads the other devices, refuses that one at ERROR, and says so
// in farthing_devices_refused and in /readyz's detail.
func TestBadDeviceEntryDoesNotStopTheGateway(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1", "meter-2"}, "", "")
	reg := filepath.Join(g.data, "devices.yaml")
	out, err := farthingCLI(t, "device", "add", "--data", g.data, "--config", g.config, "--id", "meter-3", "--type", "hmac",
		"--account", "nosuch", "--provider", "utility", "--tariff", "energy_wh=energy")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, `account "nosuch" is not configured`) {
		t.Fatalf("offline device add with an unknown account: %v\n%s", err, out)
	}
	rf, err := registry.ReadFile(reg)
	if err != nil || len(rf.Devices) != 2 {
		t.Fatalf("the device file after a refused add: %d devices, %v", len(rf.Devices), err)
	}
	rf.Devices[1].Account = "nosuch" // a hand edit
	if err := registry.WriteFile(reg, rf); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	body := httpText(t, "http://"+g.http+"/readyz")
	if !strings.Contains(body, "ready") || !strings.Contains(body, `devices refused: 1: meter-2 (account: account "nosuch" is not configured)`) {
		t.Errorf("/readyz: %q", body)
	}
	if m := httpText(t, "http://"+g.http+"/metrics"); !strings.Contains(m, "farthing_devices_refused 1") {
		t.Error("/metrics lacks farthing_devices_refused 1")
	}
	log := g.logText()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "device entry refused") || !strings.Contains(log, "meter-2") {
		t.Errorf("no ERROR line for the refused entry:\n%s", log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := dialDevice(ctx, g, "meter-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if r := dev.send(t, 1_000); r.Status != protocol.StatusAccepted {
		t.Errorf("meter-1 beside a refused entry: %+v", r)
	}
	if _, err := dialDevice(ctx, g, "meter-2"); err == nil {
		t.Error("the refused device connected")
	}
}

// httpText is the body of a GET of url (any status).
func httpText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
