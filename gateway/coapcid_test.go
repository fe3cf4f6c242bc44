package gateway_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestConnectionIDSurvivesRebinding: a device's NAT binding changes (its
// packets now come from another UDP port); with a Connection ID (RFC 9146)
// the gateway keeps serving the same session, without a new handshake.
func TestConnectionIDSurvivesRebinding(t *testing.T) {
	tg := startGateway(t, []devSpec{{"cell-1", "hmac", "fleet"}})
	raddr, _ := net.ResolveUDPAddr("udp", tg.CoAPAddr())
	opts := []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return tg.secrets["cell-1"].DTLSPSK(), nil }),
		piondtls.WithPSKIdentityHint([]byte("cell-1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	}
	pc1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := piondtls.ClientWithOptions(pc1, raddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	cc := coapdtls.Client(dc)
	if resp, err := cc.Post(ctx, "/t", 17, bytes.NewReader(signed(t, tg, "cell-1", 1, 10))); err != nil || resp.Code() != codes.Changed {
		t.Fatalf("before rebinding: %v %v", err, resp)
	}
	state, ok := dc.ConnectionState()
	if !ok {
		t.Fatal("no connection state")
	}
	// The old binding is gone; the same session continues from a new port.
	pc1.Close()
	pc2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	rc, err := piondtls.ResumeWithOptions(&state, pc2, raddr, piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()))
	if err != nil {
		t.Fatal(err)
	}
	cc2 := coapdtls.Client(rc)
	defer cc2.Close()
	resp, err := cc2.Post(ctx, "/t", 17, bytes.NewReader(signed(t, tg, "cell-1", 2, 20)))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("after rebinding: %v %v", err, resp)
	}
	_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
	if !strings.Contains(m, `farthing_transport_events_total{event="session_opened",transport="coaps"} 1`) {
		t.Fatalf("the rebinding cost a new handshake:\n%s", grepLines(m, "coaps\"}"))
	}
}
