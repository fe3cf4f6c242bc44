package coaps

import (
	"net"
	"sync"
	"time"
)

// sourceLimiter is a token bucket per source IP for new handshakes. Idle
// buckets are forgotten, so a flood from many addresses costs memory only
// while it lasts, and the table is capped.
type sourceLimiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	buckets map[string]*bucket
	max     int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newSourceLimiter(rate float64, burst int, maxSources int) *sourceLimiter {
	return &sourceLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}, max: maxSources}
}

// allow takes a token for addr's IP.
func (s *sourceLimiter) allow(addr net.Addr, now time.Time) bool {
	ip := addr.String()
	if ua, ok := addr.(*net.UDPAddr); ok {
		ip = ua.IP.String()
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
func (s *sourceLimiter) sweep(now time.Time) {
	for ip, b := range s.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*s.rate >= s.burst {
			delete(s.buckets, ip)
		}
	}
}
