package mqtt

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/acceptloop"
	"github.com/farthing-iot/farthing/gateway/sourcelimit"
)

// DoorConfig bounds the embedded broker's TCP front door. Zero fields take
// the defaults shown.
type DoorConfig struct {
	// ConnectTimeout is how long a new TCP connection may take to send its
	// CONNECT packet, from the accept; then it is closed. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxConnections caps the open connections, authenticated or not;
	// beyond it new ones are closed at once. Default 20000.
	MaxConnections int `yaml:"max_connections"`
	// ConnectRate and ConnectBurst limit new connections per second per
	// source IP address. Defaults 50 and 200. Devices behind one NAT share
	// a source: 2,000 of them reconnecting at once are all in within about
	// 36 seconds; raise the rate for larger fleets behind one address.
	ConnectRate  float64 `yaml:"connect_rate"`
	ConnectBurst int     `yaml:"connect_burst"`
}

// SetDefaults fills in the zero fields.
func (c *DoorConfig) SetDefaults() {
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 20000
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 50
	}
	if c.ConnectBurst <= 0 {
		c.ConnectBurst = 200
	}
}

// door is the embedded broker's TCP listener. No accept error ends it
// (acceptloop: it counts the error, logs it, and backs off until
// accepting works again), so a moment of file descriptor exhaustion does
// not close MQTT for good. Every connection
// gets ConnectTimeout to send CONNECT; connections are capped in number
// and in rate per source address. Serving reports whether the loop is
// accepting right now.
type door struct {
	address string
	cfg     DoorConfig
	event   func(string)
	log     *slog.Logger
	limiter *sourcelimit.Limiter

	ln    net.Listener
	loop  *acceptloop.Loop // set by listen
	open  atomic.Int64     // connections accepted and not yet closed
	conns sync.WaitGroup   // one per connection being served

	mu   sync.Mutex // guards live
	live map[*doorConn]struct{}
}

func newDoor(address string, cfg DoorConfig, event func(string), log *slog.Logger) *door {
	cfg.SetDefaults()
	return &door{address: address, cfg: cfg, event: event, log: log,
		limiter: sourcelimit.New(cfg.ConnectRate, cfg.ConnectBurst, 100000)}
}

// Address is the bound address once listen ran.
func (d *door) Address() string {
	if d.ln != nil {
		return d.ln.Addr().String()
	}
	return d.address
}

// listen binds the socket.
func (d *door) listen() error {
	ln, err := net.Listen("tcp", d.address)
	if err != nil {
		return err
	}
	d.ln = ln
	d.loop = acceptloop.New(ln, "mqtt", d.event, d.log, nil)
	return nil
}

// Serving reports whether the door is accepting connections now
// (acceptloop.Loop.Serving).
func (d *door) Serving() bool { return d.loop != nil && d.loop.Serving() }

// serve accepts until close, serving each connection on a goroutine of
// its own with serveConn, which takes the connection up to its CONNECT
// and returns the rest of its life, if it has one, to run on a new
// goroutine.
func (d *door) serve(serveConn func(*doorConn) (loop func(), err error)) {
	d.loop.Run(func(c net.Conn) { d.admit(c, serveConn) })
}

// admit takes one accepted connection: refused past the source's rate or
// the connection cap, otherwise served on a goroutine of its own.
func (d *door) admit(c net.Conn, serveConn func(*doorConn) (loop func(), err error)) {
	if !d.limiter.Allow(c.RemoteAddr(), time.Now()) {
		d.event("connect_rate_limited")
		d.log.Debug("mqtt: connection rate limit", "remote", c.RemoteAddr())
		c.Close()
		return
	}
	if d.open.Add(1) > int64(d.cfg.MaxConnections) {
		d.open.Add(-1)
		d.event("connection_cap")
		d.log.Warn("mqtt: connection cap reached; new connection refused", "remote", c.RemoteAddr(), "cap", d.cfg.MaxConnections)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(d.cfg.ConnectTimeout))
	dc := &doorConn{Conn: c, door: d}
	d.mu.Lock()
	if d.live == nil {
		d.live = map[*doorConn]struct{}{}
	}
	d.live[dc] = struct{}{}
	d.mu.Unlock()
	if d.loop.Closed() { // Close ran between the accept and now
		dc.Close()
		return
	}
	d.conns.Add(1)
	go d.serveOne(dc, serveConn)
}

// serveOne serves one connection up to its CONNECT and hands the rest of
// its life to a goroutine of its own.
func (d *door) serveOne(dc *doorConn, serveConn func(*doorConn) (loop func(), err error)) {
	loop, err := serveConn(dc)
	if loop != nil {
		// The connection's life goes on in a goroutine of its own, which
		// starts with a small stack: the one that grew while this one
		// checked the CONNECT is let go.
		go func() {
			defer d.conns.Done()
			loop()
			dc.Close()
		}()
		return
	}
	defer d.conns.Done()
	dc.Close()
	if err != nil && !dc.connected.Load() {
		reason := "connect_failed"
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason = "connect_timeout"
		}
		d.event(reason)
		d.log.Info("mqtt: connection closed before CONNECT", "remote", dc.RemoteAddr(), "reason", reason, "error", err)
	}
}

// close stops accepting and closes every connection; each client's read
// loop then ends.
func (d *door) close() {
	if d.loop == nil || d.loop.Closed() {
		return
	}
	d.loop.Close()
	d.mu.Lock()
	live := make([]*doorConn, 0, len(d.live))
	for c := range d.live {
		live = append(live, c)
	}
	d.mu.Unlock()
	for _, c := range live {
		c.Close()
	}
}

// doorConn counts a connection out once, and knows whether its CONNECT
// arrived.
type doorConn struct {
	net.Conn
	door      *door
	once      sync.Once
	connected atomic.Bool
}

func (c *doorConn) Close() error {
	c.once.Do(func() {
		c.door.open.Add(-1)
		c.door.mu.Lock()
		delete(c.door.live, c)
		c.door.mu.Unlock()
	})
	return c.Conn.Close()
}
