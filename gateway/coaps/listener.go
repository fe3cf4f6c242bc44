package coaps

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapNet "github.com/plgd-dev/go-coap/v3/net"

	"github.com/farthing-iot/farthing/gateway/acceptloop"
)

// limitedListener sits between pion's DTLS listener and the CoAP server.
// It runs each handshake in its own goroutine under a deadline, caps the
// handshakes in progress and the established sessions, and hands the CoAP
// server only sessions whose handshake completed. A flood of ClientHellos
// therefore costs a bounded number of goroutines and never delays the
// sessions already served.
type limitedListener struct {
	inner            net.Listener
	handshakeTimeout time.Duration
	maxHalfOpen      int64
	maxSessions      int64
	event            func(string)
	log              *slog.Logger
	loop             *acceptloop.Loop
	halfOpen         atomic.Int64
	sessions         atomic.Int64
	ready            chan net.Conn
	second           func(device, oldRemote, newRemote string)
	mu               sync.Mutex
	open             map[string]map[*session]struct{} // the established sessions, by device
	wg               sync.WaitGroup                   // the accept loop and the handshakes
	done             <-chan struct{}                  // the loop's: closed by Close
}

// serving reports whether the accept loop is accepting now
// (acceptloop.Loop.Serving).
func (l *limitedListener) serving() bool { return l.loop.Serving() }

// errRateLimited is what the connection-attempt hook returns for a source
// over its handshake rate; pion's Accept passes it back.
var errRateLimited = errors.New("coaps: handshake rate limit")

// listenerCaps are the limits of a limitedListener: how long a handshake
// may take, and how many handshakes and sessions may be open at once.
type listenerCaps struct {
	handshakeTimeout         time.Duration
	maxHalfOpen, maxSessions int64
}

func newLimitedListener(inner net.Listener, caps listenerCaps, event func(string), log *slog.Logger) *limitedListener {
	timeout, maxHalfOpen, maxSessions := caps.handshakeTimeout, caps.maxHalfOpen, caps.maxSessions
	l := &limitedListener{inner: inner, handshakeTimeout: timeout, maxHalfOpen: maxHalfOpen, maxSessions: maxSessions,
		event: event, log: log, ready: make(chan net.Conn), open: map[string]map[*session]struct{}{}}
	// A refusal by the handshake rate limit (errRateLimited, counted where
	// it is decided) is one source's problem: the loop goes straight on.
	l.loop = acceptloop.New(inner, "dtls", event, log, func(err error) bool { return errors.Is(err, errRateLimited) })
	l.done = l.loop.Done()
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.loop.Run(l.admit) }()
	return l
}

// admit takes one accepted DTLS connection: refused past the session cap
// or the cap of handshakes in progress, otherwise handshaken on a
// goroutine of its own.
func (l *limitedListener) admit(c net.Conn) {
	dc, ok := c.(*piondtls.Conn)
	switch {
	case !ok:
		c.Close()
		return
	case l.sessions.Load() >= l.maxSessions:
		l.event("session_cap")
		l.log.Warn("dtls: session cap reached; new session refused", "remote", c.RemoteAddr())
		c.Close()
		return
	case l.halfOpen.Add(1) > l.maxHalfOpen:
		l.halfOpen.Add(-1)
		l.event("half_open_cap")
		l.log.Warn("dtls: too many handshakes in progress; new one refused", "remote", c.RemoteAddr())
		c.Close()
		return
	}
	l.wg.Add(1)
	go l.handshake(dc)
}

func (l *limitedListener) handshake(c *piondtls.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), l.handshakeTimeout)
	err := c.HandshakeContext(ctx)
	cancel()
	l.halfOpen.Add(-1)
	if err != nil {
		reason := "handshake_failed" // a wrong key, a bad certificate, a malformed flight
		if ctx.Err() != nil {
			reason = "handshake_timeout"
		}
		l.event(reason)
		l.log.Info("dtls: handshake refused", "remote", c.RemoteAddr(), "reason", reason, "error", err)
		c.Close()
		return
	}
	l.sessions.Add(1)
	l.event("session_opened")
	s := &session{Conn: c}
	s.closed = func() {
		l.sessions.Add(-1)
		l.event("session_closed")
		l.mu.Lock()
		if mine := l.open[s.id]; mine != nil {
			delete(mine, s)
			if len(mine) == 0 {
				delete(l.open, s.id)
			}
		}
		l.mu.Unlock()
	}
	l.track(s)
	select {
	case l.ready <- s:
	case <-l.done:
		s.Close()
	}
}

// track records an established session and tells l.second when the same
// device has another open from another address.
func (l *limitedListener) track(s *session) {
	s.id = s.Identity()
	id, host := s.id, hostOf(s.RemoteAddr())
	var other string
	l.mu.Lock()
	for o := range l.open[id] {
		if hostOf(o.RemoteAddr()) != host {
			other = o.RemoteAddr().String()
		}
	}
	if l.open[id] == nil {
		l.open[id] = map[*session]struct{}{}
	}
	l.open[id][s] = struct{}{}
	l.mu.Unlock()
	if other != "" && id != "" && l.second != nil {
		l.second(id, other, s.RemoteAddr().String())
	}
}

// closeDevice closes the open sessions of device.
func (l *limitedListener) closeDevice(device string) int {
	var mine []*session
	l.mu.Lock()
	for s := range l.open[device] {
		mine = append(mine, s)
	}
	l.mu.Unlock()
	for _, s := range mine {
		s.Close()
	}
	return len(mine)
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// AcceptWithContext returns the next session whose handshake completed.
func (l *limitedListener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, coapNet.ErrListenerIsClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting, waits for handshakes in progress to end (each is
// bounded by the handshake timeout) and closes the socket.
func (l *limitedListener) Close() error {
	err := l.loop.Close()
	l.wg.Wait()
	return err
}

func (l *limitedListener) Addr() net.Addr { return l.inner.Addr() }

// session is an established DTLS session; Close counts it out once.
type session struct {
	*piondtls.Conn
	once   sync.Once
	closed func()
	id     string // the device, once tracked
}

func (s *session) Close() error {
	s.once.Do(s.closed)
	return s.Conn.Close()
}

// Identity returns the device the session authenticated: its PSK identity,
// or the common name of its certificate.
func (s *session) Identity() string {
	st, ok := s.Conn.ConnectionState()
	if !ok {
		return ""
	}
	if len(st.IdentityHint) > 0 {
		return string(st.IdentityHint)
	}
	return certIdentity(st.PeerCertificates)
}
