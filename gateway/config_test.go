package gateway_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/gateway"
)

// Errors in farthingd.yaml name the file, the line and the YAML path, and
// never a Go type.
func TestConfigErrorsNameFileLineAndPath(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"accounts:\n  - {id: a, kin: prepaid}\n", `farthingd.yaml:2: accounts[0]: unknown field "kin"`},
		{"forward:\n  backoff_min: soon\n", `farthingd.yaml:2: forward.backoff_min: "soon" is not a duration`},
		{"mqtt:\n  max_connections: many\n", `farthingd.yaml:2: mqtt.max_connections: "many" is not a whole number`},
		{"accounts:\n  - {id: a, kind: prepaid, currency: EUR}\n  - {id: b, kind: nope, currency: EUR}\n", `farthingd.yaml:3: accounts[1]: kind "nope"`},
		{"mqtt:\n  mode: sideways\n", `farthingd.yaml:2: mqtt.mode: "sideways"`},
		{"commit:\n  interval: 1m\n", `commit.interval: 1m0s: at most 5s`},
		{"commit:\n  interval: -1s\n", `commit: negative value`},
	} {
		path := filepath.Join(t.TempDir(), "farthingd.yaml")
		os.WriteFile(path, []byte(tc.yaml), 0o600)
		_, err := gateway.LoadConfig(path)
		if err == nil {
			t.Errorf("%q accepted", tc.yaml)
			continue
		}
		msg := strings.ReplaceAll(err.Error(), filepath.Dir(path)+"/", "")
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "gateway.") || strings.Contains(msg, "time.Duration") {
			t.Errorf("%q: %s\nwant it to contain %s, with no Go type names", tc.yaml, msg, tc.want)
		}
	}
}

// --print-config prints every setting with its effective value, reads
// back as the same configuration, and prints no secret.
func TestPrintConfigRoundTrips(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "farthingd.yaml")
	os.WriteFile(path, []byte("gateway_id: gw-1\ndata_dir: "+dir+"\nmqtt: {mode: external, broker: tcp://b:1883, password: hunter2-secret}\n"+
		"upstreams:\n  - {name: p, type: http, url: https://p.example/a, header: {Authorization: Bearer sekret-token}}\n"), 0o600)
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := gateway.PrintConfig(&out, cfg); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, secret := range []string{"hunter2-secret", "sekret-token"} {
		if strings.Contains(s, secret) {
			t.Fatalf("--print-config printed a secret:\n%s", s)
		}
	}
	for _, want := range []string{"handshake_timeout: 10s", "connect_timeout: 10s", "drain_rate: 200", "max_batch: 512", "socket: " + dir + "/operator.sock"} {
		if !strings.Contains(s, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, s)
		}
	}
	back := filepath.Join(dir, "printed.yaml")
	os.WriteFile(back, out.Bytes(), 0o600)
	cfg2, err := gateway.LoadConfig(back)
	if err != nil {
		t.Fatalf("the printed configuration does not load: %v", err)
	}
	if cfg2.DTLS.HandshakeTimeout != cfg.DTLS.HandshakeTimeout || cfg2.Forward != cfg.Forward || cfg2.GatewayID != "gw-1" {
		t.Fatalf("printed and loaded back: %+v; want %+v", cfg2.Forward, cfg.Forward)
	}
}

// docs/reference/config.md names every setting --print-config prints (and so every
// setting there is).
func TestConfigReferenceIsComplete(t *testing.T) {
	ref, err := os.ReadFile("../docs/reference/config.md")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstreams = []gateway.UpstreamConfig{{Name: "u", Type: "http", URL: "https://x"}}
	cfg.Accounts = []gateway.AccountConfig{{ID: "a"}}
	cfg.Providers = []gateway.ProviderConfig{{ID: "p"}}
	var out bytes.Buffer
	if err := gateway.PrintConfig(&out, cfg); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		key, _, ok := strings.Cut(strings.TrimLeft(strings.TrimSpace(line), "- "), ":")
		if !ok || strings.HasPrefix(key, "#") || key == "" {
			continue
		}
		if !strings.Contains(string(ref), "`"+key+"`") {
			t.Errorf("docs/reference/config.md does not name the setting %q", key)
		}
	}
}
