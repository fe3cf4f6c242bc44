package gateway_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"github.com/farthing-iot/farthing/gateway"
)

func coapEvent(t *testing.T, tg *testGateway, event string) bool {
	_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
	return strings.Contains(m, `farthing_transport_events_total{event="`+event+`",transport="coaps"}`)
}

func waitEvent(t *testing.T, tg *testGateway, event string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !coapEvent(t, tg, event) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q event within 10s", event)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stalledHandshake starts a handshake that never finishes: the client's
// PSK callback blocks until release is closed.
func stalledHandshake(addr string, release <-chan struct{}) func() {
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return func() {}
	}
	c, err := piondtls.ClientWithOptions(pc, raddr,
		piondtls.WithPSK(func([]byte) ([]byte, error) { <-release; return []byte("x"), nil }),
		piondtls.WithPSKIdentityHint([]byte("slowpoke")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		pc.Close()
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.HandshakeContext(ctx)
	return func() { cancel(); c.Close(); pc.Close() }
}

func TestDTLSAbuseLimits(t *testing.T) {
	tg := startGateway(t, []devSpec{{"a", "hmac", "fleet"}, {"b", "hmac", "fleet"}, {"c", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.DTLS.HandshakeTimeout = 300 * time.Millisecond
		c.DTLS.MaxHalfOpen = 2
		c.DTLS.MaxSessions = 2
		c.DTLS.IdleTimeout = 5 * time.Second // well beyond the time to try a third session, even on a loaded machine
		c.DTLS.HandshakeRate, c.DTLS.HandshakeBurst = 1000, 1000
	})
	addr := tg.CoAPAddr()

	// Handshake deadline and the cap on handshakes in progress.
	release := make(chan struct{})
	var closers []func()
	for i := 0; i < 6; i++ {
		closers = append(closers, stalledHandshake(addr, release))
	}
	waitEvent(t, tg, "half_open_cap")
	waitEvent(t, tg, "handshake_timeout")
	close(release)
	for _, c := range closers {
		c()
	}

	// The session cap: two devices in, the third refused.
	var mu sync.Mutex
	open := func(dev string) error {
		cc, err := dialCoAP(t, addr, dev, tg.secrets[dev].DTLSPSK())
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = cc.Post(ctx, "/t", 17, bytes.NewReader(signed(t, tg, dev, uint64(time.Now().UnixNano()%1e9+1), 1)))
		if err != nil {
			cc.Close()
			return err
		}
		mu.Lock()
		closers = append(closers, func() { cc.Close() })
		mu.Unlock()
		return nil
	}
	if err := open("a"); err != nil {
		t.Fatal(err)
	}
	if err := open("b"); err != nil {
		t.Fatal(err)
	}
	if err := pskHandshake(addr, "c", tg.secrets["c"].DTLSPSK()); err == nil {
		t.Fatal("a third session completed its handshake past max_sessions 2")
	}
	waitEvent(t, tg, "session_cap")
	// Idle sessions are closed, which makes room.
	waitEvent(t, tg, "idle_closed")
	if err := open("c"); err != nil {
		t.Fatalf("after the idle sessions closed, a new one was refused: %v", err)
	}
	for _, c := range closers {
		c()
	}
}
