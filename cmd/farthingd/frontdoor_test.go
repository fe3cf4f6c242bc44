package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/devicefw/mqttdev"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// gatewayDir is a data directory and configuration for one daemon, with
// its devices provisioned.
type gatewayDir struct {
	dir, data, config string
	mqtt, http        string
	secrets           map[string]registry.Secrets
}

// newGatewayDir writes a configuration with an embedded broker on a free
// port, the given mqtt settings (YAML flow-map entries, may be empty) and
// extra top-level YAML, a tariff (0.30 EUR/kWh), and the devices (HMAC;
// "id" is on the postpaid account fleet, "id@kiosk" on the prepaid
// account kiosk, which opens with 0.60 EUR).
func newGatewayDir(t *testing.T, devices []string, mqttExtra, extra string) *gatewayDir {
	t.Helper()
	g := &gatewayDir{dir: t.TempDir(), mqtt: freeAddr(t, "tcp"), http: freeAddr(t, "tcp"), secrets: map[string]registry.Secrets{}}
	g.data = filepath.Join(g.dir, "data")
	g.config = filepath.Join(g.dir, "farthingd.yaml")
	if mqttExtra != "" {
		mqttExtra = ", " + mqttExtra
	}
	os.WriteFile(g.config, []byte(fmt.Sprintf(`data_dir: %s
accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "1000000"}
  - {id: kiosk, kind: prepaid, currency: EUR, balance: "0.60"}
providers:
  - {id: utility, window: 1s, threshold: "0.05 EUR"}
mqtt: {listen: "%s"%s}
http: {listen: "%s"}
dtls: {listen: "off"}
%s`, g.data, g.mqtt, mqttExtra, g.http, extra)), 0o600)
	os.MkdirAll(g.data, 0o700)
	os.WriteFile(filepath.Join(g.data, "tariffs.yaml"), []byte("tariffs:\n  - {id: energy, currency: EUR, period: none, price: 0.30 EUR, per: 1000}\n"), 0o600)
	var rf registry.File
	for _, spec := range devices {
		id, account, ok := strings.Cut(spec, "@")
		if !ok {
			account = "fleet"
		}
		e, s, err := registry.NewDevice(id, "hmac", account, "utility", map[string]string{"energy_wh": "energy"})
		if err != nil {
			t.Fatal(err)
		}
		rf.Devices = append(rf.Devices, e)
		g.secrets[id] = s
	}
	if err := registry.WriteFile(filepath.Join(g.data, "devices.yaml"), &rf); err != nil {
		t.Fatal(err)
	}
	return g
}

// logText is the daemon's log so far.
func (g *gatewayDir) logText() string {
	b, _ := os.ReadFile(filepath.Join(g.dir, "farthingd.log"))
	return string(b)
}

// metric returns the value of one line of /metrics starting with name, or
// "" if there is none.
func (g *gatewayDir) metric(t *testing.T, c *http.Client, name string) string {
	t.Helper()
	resp, err := c.Get("http://" + g.http + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

func mqttEvent(e string) string {
	return `farthing_transport_events_total{event="` + e + `",transport="mqtt"}`
}

// testDevice is a devicefw device over mqttdev, with its receipts.
type testDevice struct {
	*mqttdev.Device
	receipts chan protocol.Receipt
	reg      uint64
}

func dialDevice(ctx context.Context, g *gatewayDir, id string) (*testDevice, error) {
	s := g.secrets[id]
	signer, _ := s.Signer()
	rv, _ := s.ReceiptVerifier()
	c, err := devicefw.New(devicefw.Config{Device: id, Meters: []string{"energy_wh"}, Signer: signer, Receipts: rv,
		Seq: &memSeq{}, Pending: make([]byte, 8*protocol.MaxTicketSize)})
	if err != nil {
		return nil, err
	}
	d := &testDevice{receipts: make(chan protocol.Receipt, 100)}
	d.Device, err = mqttdev.Connect(ctx, mqttdev.Config{Broker: "tcp://" + g.mqtt, Device: id, Password: s.MQTTPassword(), Client: c,
		OnReceipt: func(r protocol.Receipt, err error) {
			if err == nil || errors.Is(err, devicefw.ErrNotPending) {
				d.receipts <- r
			}
		}})
	return d, err
}

// report sends one ticket of 1 kWh more and waits for its receipt.
func (d *testDevice) report(t *testing.T) protocol.Receipt {
	t.Helper()
	d.reg += 1000
	if _, err := d.Report(uint64(time.Now().UnixMilli()), []devicefw.Reading{{Meter: 0, Register: d.reg}}); err != nil {
		t.Fatalf("report: %v", err)
	}
	select {
	case r := <-d.receipts:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt within 10s")
		return protocol.Receipt{}
	}
}

// TestMQTTAcceptSurvivesFDExhaustion runs farthingd with RLIMIT_NOFILE
// lowered (setrlimit in a child process) and fills its descriptor table
// with TCP connections: accepting fails with EMFILE, which is counted,
// logged and shown by /readyz; once the connections go, a device connects
// and its ticket is accepted, and /readyz is green again.
func TestMQTTAcceptSurvivesFDExhaustion(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"plug-1"}, "connect_timeout: 1m", "")
	cmd := exec.Command(os.Args[0], bin, "--config", g.config)
	cmd.Env = append(os.Environ(), rlimitHelperEnv+"=40")
	d := startDaemonCmd(t, cmd, g.config, g.mqtt)
	defer d.stop(t)
	// One keep-alive connection to the metrics listener, made before the
	// descriptors run out, to ask /readyz during the exhaustion.
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	readyz := func() (int, string) {
		resp, err := probe.Get("http://" + g.http + "/readyz")
		if err != nil {
			t.Fatalf("readyz: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	// The port takes connections into its backlog before the accept loop
	// runs: ready is what to wait for.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body := readyz()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz before the flood = %d %q", code, body)
		}
	}
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 80; i++ {
		c, err := net.DialTimeout("tcp", g.mqtt, 2*time.Second)
		if err != nil {
			break // the listen backlog is full: that is exhaustion too
		}
		flood = append(flood, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.logText(), "mqtt: accept failed; still listening") {
		if time.Now().After(deadline) {
			t.Fatalf("no accept failure logged with %d connections open; log:\n%s", len(flood), g.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "mqtt not accepting tickets") {
		t.Fatalf("readyz while accepting fails = %d %q; want 503 naming the mqtt listener", code, body)
	}
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	// A device gets in and is served.
	var dev *testDevice
	deadline = time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var err error
		dev, err = dialDevice(ctx, g, "plug-1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no device could connect after the descriptors came back: %v\nlog:\n%s", err, g.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer dev.Close()
	if r := dev.report(t); r.Status != protocol.StatusAccepted {
		t.Fatalf("ticket after the exhaustion: %+v", r)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, body := readyz()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after recovery = %d %q", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if v := g.metric(t, probe, mqttEvent("accept_error")); v == "" || v == "0" {
		t.Fatalf("accept errors not counted: %q", v)
	}
}

// rawConns opens n TCP connections from local IP ip that never send
// CONNECT.
func rawConns(t *testing.T, ip, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
	var cs []net.Conn
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", ip, err)
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

// closedWithin reports how many of cs the server closed within d.
func closedWithin(cs []net.Conn, d time.Duration) int {
	var n atomic.Int32
	done := make(chan struct{}, len(cs))
	for _, c := range cs {
		go func() {
			c.SetReadDeadline(time.Now().Add(d))
			if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				n.Add(1)
			}
			done <- struct{}{}
		}()
	}
	for range cs {
		<-done
	}
	return int(n.Load())
}

// rawMQTT connects a paho client with the given options' finishing touches;
// conn, if not nil, receives the TCP connection so a test can drop it
// without a DISCONNECT.
func rawMQTT(g *gatewayDir, user, clientID string, opt func(*paho.ClientOptions), conn *net.Conn) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + g.mqtt).SetClientID(clientID).SetUsername(user).
		SetPassword(g.secrets[user].MQTTPassword()).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	if conn != nil {
		opts.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", g.mqtt, 5*time.Second)
			*conn = c
			return c, err
		})
	}
	if opt != nil {
		opt(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return c, errors.New("connect timed out")
	}
	return c, tok.Error()
}

// TestMQTTFrontDoorLimits runs one farthingd and checks its front door:
// the CONNECT deadline, the connection cap, the per-source connection
// rate, client ids that cannot take over another device's session, and
// Wills held to the publish ACL. Other clients are served throughout.
func TestMQTTFrontDoorLimits(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"dev-a", "dev-b"}, "connect_timeout: 1s, max_connections: 40, connect_rate: 1, connect_burst: 15", "")
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	hc := &http.Client{Timeout: 5 * time.Second}

	t.Run("connect deadline", func(t *testing.T) {
		cs := rawConns(t, "127.0.0.2", g.mqtt, 10)
		if n := closedWithin(cs, 5*time.Second); n != 10 {
			t.Fatalf("%d of 10 silent connections closed within 5s; want all, after the 1s CONNECT deadline", n)
		}
		if v := g.metric(t, hc, mqttEvent("connect_timeout")); v == "" || v == "0" {
			t.Fatalf("connect timeouts not counted: %q", v)
		}
	})

	t.Run("per-source rate", func(t *testing.T) {
		cs := rawConns(t, "127.0.0.3", g.mqtt, 25)
		refused := closedWithin(cs, 500*time.Millisecond)
		if refused < 9 {
			t.Fatalf("%d of 25 connections from one source refused at once; want the 10 beyond the burst of 15", refused)
		}
		// Another source is served meanwhile.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dev, err := dialDevice(ctx, g, "dev-a")
		if err != nil {
			t.Fatalf("a device from another address during the burst: %v", err)
		}
		defer dev.Close()
		if r := dev.report(t); r.Status != protocol.StatusAccepted {
			t.Fatalf("ticket: %+v", r)
		}
		if v := g.metric(t, hc, mqttEvent("connect_rate_limited")); v == "" || v == "0" {
			t.Fatalf("rate refusals not counted: %q", v)
		}
	})

	t.Run("connection cap", func(t *testing.T) {
		time.Sleep(1500 * time.Millisecond) // the earlier silent connections are gone
		var cs []net.Conn
		for _, ip := range []string{"127.0.0.4", "127.0.0.5", "127.0.0.6"} {
			cs = append(cs, rawConns(t, ip, g.mqtt, 13)...)
		}
		time.Sleep(200 * time.Millisecond)
		extra := rawConns(t, "127.0.0.7", g.mqtt, 3)
		if n := closedWithin(extra, 500*time.Millisecond); n < 2 {
			t.Fatalf("%d of 3 connections beyond the cap of 40 refused at once", n)
		}
		if v := g.metric(t, hc, mqttEvent("connection_cap")); v == "" || v == "0" {
			t.Fatalf("cap refusals not counted: %q", v)
		}
		closedWithin(cs, 3*time.Second) // the CONNECT deadline frees them
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dev, err := dialDevice(ctx, g, "dev-b")
		if err != nil {
			t.Fatalf("a device after the cap's connections left: %v", err)
		}
		dev.Close()
	})

	t.Run("client id takeover", func(t *testing.T) {
		var lost atomic.Bool
		a, err := rawMQTT(g, "dev-a", "dev-a", func(o *paho.ClientOptions) {
			o.SetConnectionLostHandler(func(paho.Client, error) { lost.Store(true) })
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Disconnect(100)
		// dev-b logs in with its own password but dev-a's client id.
		b, err := rawMQTT(g, "dev-b", "dev-a", nil, nil)
		if err != nil {
			t.Fatalf("dev-b with a foreign client id: %v", err)
		}
		defer b.Disconnect(100)
		time.Sleep(500 * time.Millisecond)
		if lost.Load() || !a.IsConnectionOpen() {
			t.Fatal("dev-a was disconnected when dev-b connected with dev-a's client id")
		}
		if v := g.metric(t, hc, mqttEvent("client_id_replaced")); v == "" || v == "0" {
			t.Fatalf("replaced client ids not counted: %q", v)
		}
	})

	t.Run("will on another device's topic", func(t *testing.T) {
		got := make(chan string, 10)
		a, err := rawMQTT(g, "dev-a", "dev-a", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Disconnect(100)
		if tok := a.Subscribe("farthing/v1/dev-a/receipt", 0, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		var conn net.Conn
		b, err := rawMQTT(g, "dev-b", "dev-b", func(o *paho.ClientOptions) {
			o.SetWill("farthing/v1/dev-a/receipt", "forged receipt", 0, false)
		}, &conn)
		if err == nil {
			conn.Close() // drop it without DISCONNECT: the broker would publish the Will
			b.Disconnect(0)
		}
		select {
		case m := <-got:
			t.Fatalf("dev-b's Will was delivered on dev-a's receipt topic: %q", m)
		case <-time.After(time.Second):
		}
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
			t.Fatalf("CONNECT with a Will on another device's topic: %v; want a refusal (not authorized)", err)
		}
		if v := g.metric(t, hc, mqttEvent("will_refused")); v != "1" {
			t.Fatalf("will refusals counted %q; want 1", v)
		}
	})
}
