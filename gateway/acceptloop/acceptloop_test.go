package acceptloop

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failing is a listener whose Accept fails until it is told to work, then
// hands out one end of a pipe per call.
type failing struct {
	net.Listener
	fail   atomic.Bool
	closed chan struct{}
	once   sync.Once
}

func (f *failing) Accept() (net.Conn, error) {
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
	}
	if f.fail.Load() {
		return nil, errors.New("accept: too many open files")
	}
	a, b := net.Pipe()
	go func() { <-f.closed; b.Close() }()
	time.Sleep(time.Millisecond)
	return a, nil
}

func (f *failing) Close() error { f.once.Do(func() { close(f.closed) }); return nil }

// No error ends the loop, Serving says when it accepts, and Close ends it
// at once even while it backs off.
func TestLoopOutlivesErrorsAndCloses(t *testing.T) {
	ln := &failing{closed: make(chan struct{})}
	ln.fail.Store(true)
	var errs atomic.Int64
	l := New(ln, "test", func(e string) {
		if e == "accept_error" {
			errs.Add(1)
		}
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	accepted := make(chan net.Conn, 100)
	done := make(chan struct{})
	go func() { l.Run(func(c net.Conn) { accepted <- c }); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for errs.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if errs.Load() < 3 || l.Serving() {
		t.Fatalf("%d errors, serving %v; want errors counted and not serving", errs.Load(), l.Serving())
	}
	ln.fail.Store(false)
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not accept again after the errors stopped")
	}
	ln.fail.Store(true)
	for errs.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	l.Close()
	select {
	case <-done:
	case <-time.After(MaxBackoff / 2):
		t.Fatalf("Run still running %v after Close, while backing off", time.Since(start))
	}
	if l.Serving() {
		t.Fatal("Serving after Close")
	}
}
