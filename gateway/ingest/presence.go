package ingest

import (
	"sync"
	"sync/atomic"
	"time"
)

// presence remembers, in memory, when each device last sent a ticket and
// over which transport: the console's "last seen". It holds one entry per
// device that has passed the check (a registered, active device), so it is
// bounded by the registry; it starts empty on every start.
type presence struct {
	mu   sync.RWMutex
	seen map[string]*lastSeen
}

type lastSeen struct {
	at        atomic.Int64 // Unix nanoseconds
	transport atomic.Pointer[string]
}

// transportNames interns the transports' names, so that noting a ticket
// does not allocate.
var transportNames = map[string]*string{}

func init() {
	for _, t := range []string{"mqtt", "coaps", "http"} {
		transportNames[t] = &t
	}
}

// saw notes a ticket from device over transport at t.
func (p *presence) saw(device, transport string, t time.Time) {
	p.mu.RLock()
	e := p.seen[device]
	p.mu.RUnlock()
	if e == nil {
		p.mu.Lock()
		if p.seen == nil {
			p.seen = map[string]*lastSeen{}
		}
		if e = p.seen[device]; e == nil {
			e = &lastSeen{}
			p.seen[device] = e
		}
		p.mu.Unlock()
	}
	e.at.Store(t.UnixNano())
	name := transportNames[transport]
	if name == nil {
		name = &transport
	}
	e.transport.Store(name)
}

// last returns when device last sent a ticket and over which transport;
// zero and "" if not since the gateway started.
func (p *presence) last(device string) (time.Time, string) {
	p.mu.RLock()
	e := p.seen[device]
	p.mu.RUnlock()
	if e == nil {
		return time.Time{}, ""
	}
	tr := ""
	if s := e.transport.Load(); s != nil {
		tr = *s
	}
	return time.Unix(0, e.at.Load()), tr
}
