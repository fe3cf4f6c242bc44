package gateway_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/farthing-iot/farthing/protocol"
)

// clientHello captures the first flight of a real pion PSK handshake (a
// ClientHello with an unknown identity), to be replayed from many sockets.
func clientHello(t *testing.T) []byte {
	t.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	go handshake(sink.LocalAddr().String(), 500*time.Millisecond, pskOptions("attacker", []byte("bogus"))...)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := sink.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no ClientHello captured: %v", err)
	}
	return buf[:n]
}

// flood sends hello from n fresh UDP sockets (n source ports) bound to ip.
func flood(t *testing.T, ip net.IP, addr string, hello []byte, n int) {
	t.Helper()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	for i := 0; i < n; i++ {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatalf("flood socket %d: %v", i, err)
		}
		pc.WriteTo(hello, raddr)
		pc.Close()
	}
}

// eventually retries f until it succeeds or within is over.
func eventually(within time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := f()
		if err == nil || time.Since(start) > within {
			return time.Since(start), err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDTLSServesFreshSessionsAfterAFlood: with the default limits, 2,000
// ClientHellos from 2,000 source ports of one address (most refused by
// the per-source rate limit) must not end the listener's accept loop: a
// device on another address is served during the flood, and afterwards
// fresh sessions open from both addresses — with pion and with libcoap's
// coap-client — and their tickets are answered.
func TestDTLSServesFreshSessionsAfterAFlood(t *testing.T) {
	tg := startGateway(t, []devSpec{{"meter-1", "hmac", "fleet"}, {"meter-2", "hmac", "fleet"}})
	addr := tg.CoAPAddr()
	hello := clientHello(t)
	flooder := net.IPv4(127, 0, 0, 2)
	if pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: flooder}); err != nil {
		t.Fatalf("loopback 127.0.0.2 is not usable here: %v", err)
	} else {
		pc.Close()
	}
	start := time.Now()
	flood(t, flooder, addr, hello[:], 2000)
	t.Logf("flood of 2000 ClientHellos sent in %v", time.Since(start).Round(time.Millisecond))
	waitEvent(t, tg, "rate_limited")

	// A fresh session from another address, right away, and a ticket on it.
	psk := tg.secrets["meter-1"].DTLSPSK()
	took, err := eventually(10*time.Second, func() error { return pskHandshake(addr, "meter-1", psk) })
	if err != nil {
		t.Fatalf("no fresh DTLS session from 127.0.0.1 within %v of the flood: %v", took, err)
	}
	cc, err := dialCoAP(t, addr, "meter-1", psk)
	if err != nil {
		t.Fatal(err)
	}
	if resp := post(t, cc, 17, signed(t, tg, "meter-1", 1, 100)); resp.Code() != codes.Changed {
		t.Fatalf("ticket after the flood: %v", resp.Code())
	}
	cc.Close()

	// The flooding address itself is served again once its rate refills.
	took, err = eventually(15*time.Second, func() error {
		return handshakeFrom(flooder, addr, 2*time.Second, pskOptions("meter-2", tg.secrets["meter-2"].DTLSPSK())...)
	})
	if err != nil {
		t.Fatalf("the flooding address got no session within %v after its flood: %v", took, err)
	}
	t.Logf("the flooding address was served again %v after its flood", took.Round(time.Millisecond))

	// libcoap, a peer no one here wrote, opens a session and posts.
	bin, err := exec.LookPath("coap-client-openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("coap-client-openssl is not installed; scripts/test.sh installs it")
		}
		t.Skip("coap-client-openssl is not installed; run scripts/test.sh, which installs it")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "ticket.cbor")
	os.WriteFile(file, signed(t, tg, "meter-1", 2, 300), 0o600)
	out := filepath.Join(dir, "receipt.cbor")
	printed, err := exec.Command(bin, "-m", "post", "-u", "meter-1", "-k", string(psk), "-f", file, "-t", "17", "-B", "10",
		"-o", out, "coaps://"+addr+"/t").CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client: %v: %s", err, printed)
	}
	rb, _ := os.ReadFile(out)
	var env protocol.Envelope
	var r protocol.Receipt
	if err := protocol.ParseReceipt(rb, &env, &r); err != nil || r.Status != protocol.StatusAccepted {
		t.Fatalf("coap-client after the flood: receipt %+v, %v; output %s", r, err, strings.TrimSpace(string(printed)))
	}
	if !strings.Contains(metricsText(t, tg), `event="rate_limited"`) {
		t.Fatal("the flood was not counted")
	}
}

func metricsText(t *testing.T, tg *testGateway) string {
	_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
	return m
}

// handshakeFrom is handshake from a socket bound to ip.
func handshakeFrom(ip net.IP, addr string, timeout time.Duration, opts ...piondtls.ClientOption) error {
	return handshakeBound(&net.UDPAddr{IP: ip}, addr, timeout, opts...)
}
