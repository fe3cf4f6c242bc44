// Package sourcelimit is a token bucket per source IP address, the rate
// limit every listener of the gateway puts in front of new connections
// and handshakes, so that one source flooding a door does not take it from
// the others.
package sourcelimit

import (
	"net"
	"sync"
	"time"
)

// Limiter holds one token bucket per source IP. Idle buckets are
// forgotten, so a flood from many addresses costs memory only while it
// lasts, and the table is capped: when it is full of active sources, new
// sources are refused until some go quiet. The zero value is not usable;
// use New. It is safe for concurrent use.
type Limiter struct {
	mu      sync.Mutex // guards buckets
	rate    float64    // tokens per second
	burst   float64
	buckets map[string]*bucket
	max     int
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter allowing each source rate new attempts per second
// on average and burst at once, tracking at most maxSources sources.
func New(rate float64, burst int, maxSources int) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}, max: maxSources}
}

// Allow takes a token for addr's IP (the port is not part of the source)
// and reports whether there was one.
func (s *Limiter) Allow(addr net.Addr, now time.Time) bool {
	ip := addr.String()
	switch a := addr.(type) {
	case *net.UDPAddr:
		ip = a.IP.String()
	case *net.TCPAddr:
		ip = a.IP.String()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[ip]
	if b == nil {
		if len(s.buckets) >= s.max {
			s.sweep(now)
			if len(s.buckets) >= s.max {
				return false
			}
		}
		b = &bucket{tokens: s.burst, last: now}
		s.buckets[ip] = b
	}
	b.tokens = min(s.burst, b.tokens+now.Sub(b.last).Seconds()*s.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets buckets that have refilled: they hold no information.
func (s *Limiter) sweep(now time.Time) {
	for ip, b := range s.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*s.rate >= s.burst {
			delete(s.buckets, ip)
		}
	}
}
