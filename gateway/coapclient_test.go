package gateway_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// TestLibcoapClientPostsATicket: libcoap's coap-client, a CoAP/DTLS stack no
// one here wrote, posts a ticket file over DTLS with the device's PSK and
// gets the receipt back. (coap-client exits 0 even when it fails: the test
// reads what it printed.)
func TestLibcoapClientPostsATicket(t *testing.T) {
	bin, err := exec.LookPath("coap-client-openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("coap-client-openssl is not installed; scripts/test.sh installs it (apt-get install -y libcoap3-bin)")
		}
		t.Skip("coap-client-openssl is not installed; run scripts/test.sh, which installs it")
	}
	tg := startGateway(t, []devSpec{{"meter-7", "hmac", "prepaid-1"}})
	dir := t.TempDir()
	// The device's secret as `farthing device add` writes it, and a ticket
	// as `farthing ticket` makes it.
	keyPath := filepath.Join(dir, "meter-7.secret")
	pem, _ := (&keyfile.Key{Master: tg.secrets["meter-7"].Master}).EncodePrivate()
	os.WriteFile(keyPath, pem, 0o600)
	k, err := keyfile.Load(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := k.Signer(protocol.KindTicket)
	var enc protocol.Encoder
	post := func(seq, reg uint64) (protocol.Receipt, string) {
		b, _ := enc.AppendTicket(nil, &protocol.Ticket{Device: "meter-7", Seq: seq, Time: now(),
			Readings: []protocol.Reading{{Meter: "energy_wh", Register: reg}}}, signer)
		file := filepath.Join(dir, "ticket.cbor")
		os.WriteFile(file, b, 0o600)
		out := filepath.Join(dir, "receipt.cbor")
		os.Remove(out)
		cmd := exec.Command(bin, "-m", "post", "-u", "meter-7", "-k", string(tg.secrets["meter-7"].DTLSPSK()),
			"-f", file, "-t", "17", "-B", "10", "-o", out, "coaps://"+tg.CoAPAddr()+"/t")
		printed, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client: %v: %s", err, printed)
		}
		rb, err := os.ReadFile(out)
		if err != nil || len(rb) == 0 {
			t.Fatalf("coap-client got no receipt: %s", printed)
		}
		var env protocol.Envelope
		var r protocol.Receipt
		if err := protocol.ParseReceipt(rb, &env, &r); err != nil {
			t.Fatalf("coap-client's response is not a receipt: %v: %s", err, printed)
		}
		rv, _ := tg.secrets["meter-7"].ReceiptVerifier()
		if err := env.Verify(rv, nil); err != nil {
			t.Fatal(err)
		}
		return r, string(printed)
	}
	if r, out := post(1, 1000); r.Status != protocol.StatusAccepted {
		t.Fatalf("first ticket: %+v %s", r, out)
	}
	if r, out := post(2, 4000); r.Status != protocol.StatusAccepted || r.Charged != 900_000_000 {
		t.Fatalf("3 kWh at 0.30 via coap-client: %+v %s", r, out)
	}
	// The wrong key: coap-client reports the failure, nothing is stored.
	cmd := exec.Command(bin, "-m", "post", "-u", "meter-7", "-k", "wrong-key-wrong-key-wrong-key-00",
		"-f", filepath.Join(dir, "ticket.cbor"), "-t", "17", "-B", "3", "coaps://"+tg.CoAPAddr()+"/t")
	printed, _ := cmd.CombinedOutput()
	if strings.Contains(string(printed), "2.04") {
		t.Fatalf("a wrong PSK was served: %s", printed)
	}
}
