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
	serving          atomic.Bool  // the accept loop runs
	lastError        atomic.Int64 // unix ns of the last Accept error other than a refusal
	halfOpen         atomic.Int64
	sessions         atomic.Int64
	ready            chan net.Conn
	second           func(device, oldRemote, newRemote string)
	mu               sync.Mutex
	open             map[string]map[*session]struct{} // the established sessions, by device
	wg               sync.WaitGroup                   // the accept loop and the handshakes
	closeOnce        sync.Once
	done             chan struct{}
}

// The backoff of the accept loop after an error other than a rate-limit
// refusal.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// failing reports whether Accept failed (other than by a refusal) within
// the last two maximum backoffs: while accepting fails, it fails at least
// that often.
func (l *limitedListener) failing() bool {
	return time.Since(time.Unix(0, l.lastError.Load())) < 2*maxAcceptBackoff
}

// errRateLimited is what the connection-attempt hook returns for a source
// over its handshake rate; pion's Accept passes it back.
var errRateLimited = errors.New("coaps: handshake rate limit")

func newLimitedListener(inner net.Listener, timeout time.Duration, maxHalfOpen, maxSessions int64, event func(string), log *slog.Logger) *limitedListener {
	l := &limitedListener{inner: inner, handshakeTimeout: timeout, maxHalfOpen: maxHalfOpen, maxSessions: maxSessions,
		event: event, log: log, ready: make(chan net.Conn), done: make(chan struct{}), open: map[string]map[*session]struct{}{}}
	l.wg.Add(1)
	l.serving.Store(true)
	go l.acceptLoop()
	return l
}

// acceptLoop runs until Close. No error ends it: a refusal by the
// handshake rate limit (errRateLimited, counted where it is decided) is
// one source's problem and the loop goes straight on; any other error is
// counted, logged, and waited out with a backoff from minAcceptBackoff to
// maxAcceptBackoff, so a failing socket does not spin a core while the
// listener keeps its place.
func (l *limitedListener) acceptLoop() {
	defer l.wg.Done()
	defer l.serving.Store(false)
	backoff := time.Duration(0)
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, errRateLimited) {
				continue
			}
			l.lastError.Store(time.Now().UnixNano())
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			l.event("accept_error")
			l.log.Warn("dtls: accept failed; still listening", "error", err, "retry_in", backoff)
			select {
			case <-l.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		dc, ok := c.(*piondtls.Conn)
		switch {
		case !ok:
			c.Close()
			continue
		case l.sessions.Load() >= l.maxSessions:
			l.event("session_cap")
			l.log.Warn("dtls: session cap reached; new session refused", "remote", c.RemoteAddr())
			c.Close()
			continue
		case l.halfOpen.Add(1) > l.maxHalfOpen:
			l.halfOpen.Add(-1)
			l.event("half_open_cap")
			l.log.Warn("dtls: too many handshakes in progress; new one refused", "remote", c.RemoteAddr())
			c.Close()
			continue
		}
		l.wg.Add(1)
		go l.handshake(dc)
	}
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
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.wg.Wait()
	})
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
