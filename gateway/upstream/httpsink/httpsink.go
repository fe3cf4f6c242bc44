// Package httpsink delivers aggregates by HTTPS POST of the CBOR message
// with an Idempotency-Key header; a 2xx answer confirms.
package httpsink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/farthing-iot/farthing/gateway/upstream"
)

// Config configures the sink.
type Config struct {
	URL string // the receiver's endpoint, e.g. https://provider.example/farthing/aggregates
	// Client is the HTTP client; default one with a 30 s timeout.
	Client *http.Client
	// Header is added to every request (for example Authorization).
	Header http.Header
	// OnDate, if set, gets the server's clock (its Date header, to the
	// second) and when the answer came, for the gateway to check its own
	// clock against.
	OnDate func(server, received time.Time)
}

// Sink posts aggregates.
type Sink struct{ cfg Config }

// New returns a sink.
func New(cfg Config) *Sink {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Sink{cfg: cfg}
}

// Send posts one aggregate and returns nil on a 2xx answer.
func (s *Sink) Send(ctx context.Context, a upstream.Outgoing) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(a.Bytes))
	if err != nil {
		return err
	}
	for k, v := range s.cfg.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", upstream.ContentType)
	req.Header.Set("Idempotency-Key", a.Key)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if s.cfg.OnDate != nil {
		if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			s.cfg.OnDate(d, time.Now())
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("httpsink: %s answered %s: %s", s.cfg.URL, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// Close does nothing: HTTP has no session.
func (s *Sink) Close() error { return nil }
