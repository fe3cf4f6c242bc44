package coaps

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
)

// flakyListener fails Accept while failing is set, then hands over to the
// real DTLS listener under it.
type flakyListener struct {
	net.Listener
	failing atomic.Bool
}

var errNoFiles = errors.New("accept: too many open files")

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.failing.Load() {
		time.Sleep(time.Millisecond)
		return nil, errNoFiles
	}
	return f.Listener.Accept()
}

// The accept loop outlives errors: it counts them, reports itself not
// serving while they last and serving again once they stop, and a
// handshake after that completes.
func TestAcceptLoopOutlivesErrors(t *testing.T) {
	psk := []byte("0123456789abcdef")
	inner, err := piondtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }), piondtls.WithPSKIdentityHint([]byte("farthing")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: inner}
	fl.failing.Store(true)
	var mu sync.Mutex
	events := map[string]int{}
	l := newLimitedListener(fl, listenerCaps{5 * time.Second, 16, 16}, func(e string) { mu.Lock(); events[e]++; mu.Unlock() },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	s := &Server{l: l}
	time.Sleep(100 * time.Millisecond)
	if s.Serving() {
		t.Fatal("Serving() while every Accept fails")
	}
	fl.failing.Store(false)
	raddr := inner.Addr().(*net.UDPAddr)
	done := make(chan error, 1)
	go func() {
		c, err := piondtls.DialWithOptions("udp", raddr, piondtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
			piondtls.WithPSKIdentityHint([]byte("dev")), piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
		if err == nil {
			err = c.Handshake()
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("handshake after the errors: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake within 10s after the errors stopped")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.Serving() {
		if time.Now().After(deadline) {
			t.Fatal("not Serving() 5s after the errors stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The client's handshake ends when it has the server's Finished; the
	// server counts the session once its own side is done: wait for it.
	opened := func() (int, string) {
		mu.Lock()
		defer mu.Unlock()
		return events["session_opened"], fmt.Sprint(events)
	}
	for n, _ := opened(); n == 0 && time.Now().Before(deadline); n, _ = opened() {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if events["accept_error"] == 0 || events["session_opened"] != 1 {
		t.Fatalf("events %v; want accept errors counted and one session", events)
	}
}
