package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/protocol"
)

// editRegistry changes the gateway's device file and reloads it, as the
// farthing CLI and SIGHUP do.
func editRegistry(t *testing.T, tg *testGateway, change func(rf *registry.File)) {
	t.Helper()
	rf, err := registry.ReadFile(tg.cfg.Devices)
	if err != nil {
		t.Fatal(err)
	}
	change(rf)
	if err := registry.WriteFile(tg.cfg.Devices, rf); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reload(); err != nil {
		t.Fatal(err)
	}
}

func entry(rf *registry.File, id string) *registry.Entry {
	for i := range rf.Devices {
		if rf.Devices[i].ID == id {
			return &rf.Devices[i]
		}
	}
	return nil
}

// submit runs bytes through the pipeline as device would send them.
func submit(tg *testGateway, device string, b []byte) protocol.Receipt {
	return tg.Ingest().Submit(context.Background(), entrance.Message{Device: device, Payload: b, Transport: "test"}).Receipt
}

func ticketBy(t testing.TB, s protocol.Signer, device string, seq, reg uint64) []byte {
	var enc protocol.Encoder
	b, err := enc.AppendTicket(nil, &protocol.Ticket{Device: device, Seq: seq, Time: now(),
		Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRevokeClosesSessionsAndRefusesTheKey: revoking a device closes its
// open MQTT and DTLS sessions at once, it cannot log in or shake hands
// again, its tickets are refused with key_revoked, and its key cannot be
// registered again.
func TestRevokeClosesSessionsAndRefusesTheKey(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}, {"plug-2", "hmac", "fleet"}})
	rc, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword())
	if err != nil {
		t.Fatal(err)
	}
	rc.publish(t, "plug-1", signed(t, tg, "plug-1", 1, 100))
	if r := rc.receipt(t, tg); r.Status != protocol.StatusAccepted {
		t.Fatalf("before: %+v", r)
	}
	cc, err := dialCoAP(t, tg.CoAPAddr(), "plug-2", tg.secrets["plug-2"].DTLSPSK())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if resp := post(t, cc, 17, signed(t, tg, "plug-2", 1, 100)); resp.Code() != codes.Changed {
		t.Fatalf("before over CoAP: %v", resp.Code())
	}
	editRegistry(t, tg, func(rf *registry.File) {
		for _, id := range []string{"plug-1", "plug-2"} {
			e := entry(rf, id)
			e.Revoked = true
			kid, _, _ := registry.KeyIDs(*e)
			rf.RevokedKeys = append(rf.RevokedKeys, hex.EncodeToString(kid[:]))
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for rc.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rc.IsConnectionOpen() {
		t.Error("the revoked device's MQTT session is still open")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = cc.Post(ctx, "/t", 17, strings.NewReader(string(signed(t, tg, "plug-2", 2, 200))))
	cancel()
	if err == nil {
		t.Error("the revoked device's DTLS session still answers")
	}
	if !strings.Contains(tg.logs.String(), "transport=coaps sessions=1") {
		t.Errorf("no log of the DTLS session closed:\n%s", tg.logs.String())
	}
	if _, err := connectRaw(t, tg, "plug-1", tg.secrets["plug-1"].MQTTPassword()); err == nil {
		t.Error("a revoked device logged in")
	}
	if err := pskHandshake(tg.CoAPAddr(), "plug-2", tg.secrets["plug-2"].DTLSPSK()); err == nil {
		t.Error("a revoked device completed a DTLS handshake")
	}
	if r := submit(tg, "plug-1", signed(t, tg, "plug-1", 2, 200)); r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonKeyRevoked {
		t.Errorf("a revoked device's ticket: %+v; want rejected, key_revoked", r)
	}
	// Re-registering the key under another entry (the revoked one
	// removed) is refused, naming the line.
	rf, _ := registry.ReadFile(tg.cfg.Devices)
	again := *entry(rf, "plug-1")
	again.ID, again.Revoked = "plug-1b", false
	rf.Devices = append(rf.Devices[1:], again)
	registry.WriteFile(tg.cfg.Devices, rf)
	rf, _ = registry.ReadFile(tg.cfg.Devices)
	if _, err := registry.Build(tg.cfg.Devices, rf, tg.Ingest().Snapshot()); err == nil ||
		!strings.Contains(err.Error(), "was revoked") || !strings.Contains(err.Error(), "devices.yaml:") {
		t.Errorf("a revoked key registered again: %v", err)
	}
}

// TestRotationOverlap: an ed25519 device rotates to a key it made: both
// keys are accepted until the device is seen using the new one, then the
// old one is refused; an hmac device past its overlap deadline is refused
// under the old key at once, logs in and gets receipts under the new.
func TestRotationOverlap(t *testing.T) {
	tg := startGateway(t, []devSpec{{"evse-1", "ed25519", "fleet"}, {"plug-1", "hmac", "fleet"}})
	oldSigner, _ := tg.secrets["evse-1"].Signer()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	newSigner, _ := protocol.NewEd25519Signer(priv)
	next := make([]byte, protocol.MasterSecretSize)
	rand.Read(next)
	editRegistry(t, tg, func(rf *registry.File) {
		entry(rf, "evse-1").Next = &registry.NextKey{PublicKey: hex.EncodeToString(pub), Until: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}
		entry(rf, "plug-1").Next = &registry.NextKey{Secret: hex.EncodeToString(next), Until: time.Now().Add(-time.Second).UTC().Format(time.RFC3339)}
	})
	for i, c := range []struct {
		s      protocol.Signer
		status protocol.Status
	}{{oldSigner, protocol.StatusAccepted}, {oldSigner, protocol.StatusAccepted}, {newSigner, protocol.StatusAccepted}, {oldSigner, protocol.StatusRejected}} {
		r := submit(tg, "evse-1", ticketBy(t, c.s, "evse-1", uint64(i+1), uint64(100*(i+1))))
		if r.Status != c.status || (c.status == protocol.StatusRejected && r.Reason != protocol.ReasonKeyRevoked) {
			t.Fatalf("evse-1 ticket %d: %+v; want %v", i+1, r, c.status)
		}
	}
	// The hmac device: the deadline passed, so only the new key works,
	// with the new MQTT password, and its receipts are MAC'd with the new
	// secret's receipt key.
	ns := registry.Secrets{Master: next}
	nextSigner, _ := ns.Signer()
	if r := submit(tg, "plug-1", signed(t, tg, "plug-1", 1, 100)); r.Reason != protocol.ReasonKeyRevoked {
		t.Errorf("old key after the deadline: %+v", r)
	}
	tg.secrets["plug-1"] = ns
	rc, err := connectRaw(t, tg, "plug-1", ns.MQTTPassword())
	if err != nil {
		t.Fatalf("login with the next password: %v", err)
	}
	rc.publish(t, "plug-1", ticketBy(t, nextSigner, "plug-1", 2, 200))
	if r := rc.receipt(t, tg); r.Status != protocol.StatusAccepted { // receipt verifies with the new receipt key
		t.Fatalf("new key: %+v", r)
	}
}

// TestCRLRefusesRevokedCertificate: a client certificate on the CA's
// revocation list fails the handshake; the list is read again when it
// changes, with no restart.
func TestCRLRefusesRevokedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caDER := issue(t, "farthing devices CA", nil, nil, true)
	_, gwKey, gwDER := issue(t, "gateway.local", ca, caKey, false)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	writePEM(t, filepath.Join(dir, "gw.pem"), "CERTIFICATE", gwDER)
	k, _ := x509.MarshalECPrivateKey(gwKey)
	writePEM(t, filepath.Join(dir, "gw.key"), "EC PRIVATE KEY", k)
	_, goodKey, goodDER := issue(t, "evse-9", ca, caKey, false)
	bad, badKey, badDER := issue(t, "evse-8", ca, caKey, false)
	crl := func(n int64, revoked ...*x509.Certificate) {
		var entries []x509.RevocationListEntry
		for _, c := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now(),
			NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca, caKey)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, "ca.crl"), "X509 CRL", der)
	}
	crl(1)
	tg := startGateway(t, []devSpec{{"evse-9", "ed25519", "fleet"}, {"evse-8", "ed25519", "fleet"}}, func(c *gateway.Config) {
		c.DTLS.CertFile, c.DTLS.KeyFile, c.DTLS.ClientCAFile = filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw.key"), filepath.Join(dir, "ca.pem")
		c.DTLS.CRLFile = filepath.Join(dir, "ca.crl")
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	badCert := tls.Certificate{Certificate: [][]byte{badDER}, PrivateKey: badKey}
	if err := certHandshake(tg.CoAPAddr(), badCert, roots); err != nil {
		t.Fatalf("evse-8 before its revocation: %v", err)
	}
	time.Sleep(1100 * time.Millisecond) // the list is looked at once a second; and mtime must move
	crl(2, bad)
	time.Sleep(1100 * time.Millisecond)
	if err := certHandshake(tg.CoAPAddr(), badCert, roots); err == nil {
		t.Fatal("a revoked certificate completed a handshake")
	}
	if err := certHandshake(tg.CoAPAddr(), tls.Certificate{Certificate: [][]byte{goodDER}, PrivateKey: goodKey}, roots); err != nil {
		t.Fatalf("a certificate not revoked: %v", err)
	}
	if !strings.Contains(tg.logs.String(), "revoked client certificate refused") || !strings.Contains(tg.logs.String(), "serial="+bad.SerialNumber.String()) {
		t.Errorf("no log line for the refusal:\n%s", tg.logs.String())
	}

}

// TestClonedDeviceIsSuspended: the same device's key used in two places —
// its MQTT session taken over from another address, and a second seq
// stream that makes the genuine tickets "superseded" — counts signs of a
// clone; with clones: suspend the device is suspended (its sessions
// closed, its tickets refused) until an operator resumes it.
func TestClonedDeviceIsSuspended(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}, {"plug-2", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Fraud = ingest.FraudConfig{Clones: "suspend", CloneSignals: 4, Window: time.Hour}
	})
	pw := tg.secrets["plug-1"].MQTTPassword()
	genuine, err := connectRaw(t, tg, "plug-1", pw)
	if err != nil {
		t.Fatal(err)
	}
	// The clone logs in from another address: a takeover sign.
	opts := paho.NewClientOptions().AddBroker(tg.broker).SetClientID("clone").SetUsername("plug-1").SetPassword(pw).
		SetAutoReconnect(false).SetDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}})
	clone := paho.NewClient(opts)
	if tok := clone.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("clone connect: %v", tok.Error())
	}
	defer clone.Disconnect(100)
	// The clone sends seq 100; the genuine device's next tickets are below.
	if r := submit(tg, "plug-1", signed(t, tg, "plug-1", 100, 100)); r.Status != protocol.StatusAccepted {
		t.Fatalf("clone's ticket: %+v", r)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if r := submit(tg, "plug-1", signed(t, tg, "plug-1", seq, seq)); r.Reason != protocol.ReasonSuperseded {
			t.Fatalf("genuine ticket %d: %+v; want superseded", seq, r)
		}
	}
	if r := submit(tg, "plug-1", signed(t, tg, "plug-1", 101, 200)); r.Status != protocol.StatusRejected || r.Reason != protocol.ReasonDeviceSuspended {
		t.Fatalf("after 4 signs: %+v; want rejected, device_suspended", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for clone.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if clone.IsConnectionOpen() {
		t.Error("the suspended device's session is still open")
	}
	if _, err := connectRaw(t, tg, "plug-1", pw); err == nil {
		t.Error("a suspended device logged in")
	}
	_ = genuine
	logs := tg.logs.String()
	for _, want := range []string{"device may be cloned", "sign=" + ingest.SignTakeover, "sign=" + ingest.SignSuperseded, "device suspended"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	list, _ := tg.Books().Suspensions()
	if len(list) != 1 || list[0].Device != "plug-1" {
		t.Fatalf("suspensions %+v", list)
	}
	// Other devices are served all along; the suspension survives until resumed.
	if r := submit(tg, "plug-2", signed(t, tg, "plug-2", 1, 1)); r.Status != protocol.StatusAccepted {
		t.Errorf("another device: %+v", r)
	}
	if was, err := tg.Ingest().Resume(context.Background(), "plug-1", "test"); !was || err != nil {
		t.Fatalf("resume: %v %v", was, err)
	}
	if r := submit(tg, "plug-1", signed(t, tg, "plug-1", 102, 300)); r.Status != protocol.StatusAccepted {
		t.Errorf("after resume: %+v", r)
	}
}

// TestHeldOverCoAPAndAutoSuspend: over CoAP, a jump is held (2.04 with a
// held receipt, nothing charged); a device held twice within the window is
// suspended (its DTLS session closed, a new handshake refused) until
// resumed; the release charges the held usage once.
func TestHeldOverCoAPAndAutoSuspend(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-1", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.Fraud = ingest.FraudConfig{SuspendAfter: 2, Window: time.Hour}
		os.WriteFile(c.Tariffs, []byte(strings.Replace(testTariffs, "per: 1000}", "per: 1000, plausibility: {max_jump: 10000}}", 1)), 0o600)
	})
	psk := tg.secrets["plug-1"].DTLSPSK()
	cc, err := dialCoAP(t, tg.CoAPAddr(), "plug-1", psk)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	want := func(cc *udpClient.Conn, seq, reg uint64, status protocol.Status, charged uint64) {
		t.Helper()
		resp := post(t, cc, 17, signed(t, tg, "plug-1", seq, reg))
		if r := coapReceipt(t, tg, "plug-1", resp); resp.Code() != codes.Changed || r.Status != status || r.Charged != charged {
			t.Fatalf("seq %d register %d: %v %+v; want %v charged %d", seq, reg, resp.Code(), r, status, charged)
		}
	}
	want(cc, 1, 1_000, protocol.StatusAccepted, 0)
	want(cc, 2, 2_000, protocol.StatusAccepted, 300_000_000)
	want(cc, 3, 30_000, protocol.StatusHeld, 0) // 28 kWh > 10 kWh in one ticket
	want(cc, 4, 31_000, protocol.StatusAccepted, 300_000_000)
	want(cc, 5, 60_000, protocol.StatusHeld, 0) // the second hold: suspended
	// Its session is closed within a second (after that receipt went out).
	select {
	case <-cc.Done():
	case <-time.After(3 * time.Second):
		t.Error("the suspended device's DTLS session is still open")
	}
	if err := pskHandshake(tg.CoAPAddr(), "plug-1", psk); err == nil {
		t.Error("a suspended device completed a handshake")
	}
	if _, err := tg.Ingest().Resume(context.Background(), "plug-1", "test"); err != nil {
		t.Fatal(err)
	}
	cc2, err := coapdtls.Dial(tg.CoAPAddr(), coapdtls.NewDTLSClientOptions(piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		piondtls.WithPSKIdentityHint([]byte("plug-1")), piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
	if err != nil {
		t.Fatalf("after resume: %v", err)
	}
	defer cc2.Close()
	want(cc2, 6, 61_000, protocol.StatusAccepted, 300_000_000) // from 60000: held usage is not charged here
	h, err := tg.Ingest().Books().Release(context.Background(), &tg.Ingest().Snapshot().Terms, ledger.HoldSettlement{Device: "plug-1", Seq: 3, Note: "ok", Credential: "test"})
	if err != nil || h.Charged != 28*300_000_000 {
		t.Fatalf("release: %+v %v; want 8.40 EUR", h, err)
	}
	rep, _ := tg.Books().Inspect(nil)
	if !rep.Reconcile.Balanced || rep.Reconcile.LedgerCharged != 3*300_000_000+28*300_000_000 || rep.Reconcile.Held.Open != 1 {
		t.Errorf("reconcile %+v", rep.Reconcile)
	}
}
