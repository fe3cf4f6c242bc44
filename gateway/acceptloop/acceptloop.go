// Package acceptloop is the accept loop the device listeners share (the
// embedded MQTT broker's TCP door and the DTLS listener). No error ends
// it: an error is counted, logged and waited out with a backoff that
// doubles from MinBackoff to MaxBackoff, so a moment of file-descriptor
// exhaustion neither closes the door for good nor spins a core, and the
// wait ends at once when the listener is closed. Only Close ends it.
package acceptloop

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The backoff after an accept error.
const (
	MinBackoff = 5 * time.Millisecond
	MaxBackoff = time.Second
)

// Loop accepts from one listener. Its zero value is not usable: use New.
type Loop struct {
	ln    net.Listener
	name  string
	event func(string)
	log   *slog.Logger
	// skip says an error is one source's refusal (a rate limit decided in
	// the listener), not the listener's: the loop goes straight on.
	skip func(error) bool

	done      chan struct{}
	closeOnce sync.Once
	serving   atomic.Bool  // Run is in its loop
	lastError atomic.Int64 // Unix ns of the last error that was not skipped
}

// New returns a loop over ln. name prefixes its log lines ("mqtt",
// "dtls"); event counts each "accept_error"; skip, if not nil, marks the
// errors to go on from without counting or backing off.
func New(ln net.Listener, name string, event func(string), log *slog.Logger, skip func(error) bool) *Loop {
	return &Loop{ln: ln, name: name, event: event, log: log, skip: skip, done: make(chan struct{})}
}

// Run calls handle with every connection accepted, on Run's goroutine,
// until Close. handle must not block: it starts what serves the
// connection.
func (l *Loop) Run(handle func(net.Conn)) {
	l.serving.Store(true)
	defer l.serving.Store(false)
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if l.Closed() {
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			if l.skip != nil && l.skip(err) {
				continue
			}
			l.lastError.Store(time.Now().UnixNano())
			backoff = min(max(2*backoff, MinBackoff), MaxBackoff)
			l.event("accept_error")
			l.log.Warn(l.name+": accept failed; still listening", "error", err, "retry_in", backoff)
			select {
			case <-l.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		if backoff > 0 {
			l.log.Info(l.name + ": accepting again")
			backoff = 0
		}
		handle(c)
	}
}

// Close closes the listener and ends Run, also while it waits out an
// error. It is safe to call more than once.
func (l *Loop) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Closed reports whether Close ran.
func (l *Loop) Closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Done is closed when Close runs.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Serving reports whether the loop is accepting now: in Run, and without
// an error in the last two MaxBackoffs (while accepting fails, it fails at
// least once per MaxBackoff).
func (l *Loop) Serving() bool {
	return l.serving.Load() && time.Since(time.Unix(0, l.lastError.Load())) >= 2*MaxBackoff
}
