// Package coaps carries tickets over CoAP (RFC 7252) on DTLS 1.2 (pion/dtls
// v3) with the IoT profile of RFC 7925: a device POSTs a ticket to /t and
// gets its receipt in the response, after the commit. go-coap (plgd) does
// the CoAP: piggybacked ACKs, message-ID deduplication and retransmission.
//
// Devices authenticate with a PSK whose identity is their device id, or
// with an X.509 certificate whose common name is their device id; the
// ticket's device must be the same. Connection IDs (RFC 9146) keep a
// session across a NAT rebinding. Abuse limits, each counted: a handshake
// deadline, a cap on handshakes in progress, a per-source handshake rate,
// an idle-session timeout and a cap on sessions.
package coaps

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/farthing-iot/farthing/gateway/entrance"
	"github.com/farthing-iot/farthing/gateway/sourcelimit"
	"github.com/farthing-iot/farthing/protocol"
)

// CoAP Content-Formats of COSE messages (protocol.ContentFormatMac0, …).
const (
	ContentFormatMac0  = message.MediaType(protocol.ContentFormatMac0)
	ContentFormatSign1 = message.MediaType(protocol.ContentFormatSign1)
	ContentFormatCBOR  = message.MediaType(protocol.ContentFormatCBOR)
)

// Config configures the listener. Zero fields take the defaults shown.
type Config struct {
	Listen string // UDP address; default 127.0.0.1:5684
	Path   string // the resource tickets are POSTed to; default protocol.CoAPTicketPath
	// Handle takes every message an authenticated device POSTs: tickets
	// to Path and, when Vouchers, vouchers to protocol.CoAPVoucherPath.
	// The response waits for its Reply.
	Handle entrance.Handler
	// Vouchers serves POST /v (protocol.CoAPVoucherPath): a voucher an
	// authenticated device passed on.
	Vouchers bool
	// PSK returns the device's DTLS pre-shared key for a PSK identity.
	PSK func(identity string) ([]byte, bool)
	// Certificate, if set, lets devices authenticate with X.509
	// certificates issued by ClientCAs; the common name is the device id.
	Certificate *tls.Certificate
	ClientCAs   *x509.CertPool
	// Revoked, if set, is asked about every client certificate that
	// verified: a revoked one (its serial on the CA's revocation list)
	// fails the handshake.
	Revoked func(*x509.Certificate) bool
	// SecondSession, if set, is told when a device opens a session while
	// another of its sessions is open from another address (a sign of a
	// clone; a device that reconnects from the same address is not).
	SecondSession func(device, oldRemote, newRemote string)

	Limits

	Log   *slog.Logger
	Event func(event string) // counts refusals and session events
}

// Limits are the listener's abuse limits (the dtls section of
// farthingd.yaml). Zero fields take the defaults shown.
type Limits struct {
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"` // a handshake's deadline; default 10s
	MaxHalfOpen      int           `yaml:"max_half_open"`     // handshakes in progress; default 256
	HandshakeRate    float64       `yaml:"handshake_rate"`    // new handshakes per second per source IP; default 5
	HandshakeBurst   int           `yaml:"handshake_burst"`   // default 20
	IdleTimeout      time.Duration `yaml:"idle_timeout"`      // an idle session closes; default 5m
	MaxSessions      int           `yaml:"max_sessions"`      // default 20000
	// ReadBuffer is the UDP socket's receive buffer in bytes; default
	// 4 MiB. Every session's datagrams arrive on the one socket, so a
	// burst from a large fleet waits there while the gateway is busy; a
	// datagram that finds it full is dropped by the kernel and the device
	// retransmits only after CoAP's ACK_TIMEOUT (2 s or more). Linux caps
	// it at net.core.rmem_max; the gateway logs what it got.
	ReadBuffer int `yaml:"read_buffer"`
}

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:5684"
	}
	if c.Path == "" {
		c.Path = protocol.CoAPTicketPath
	}
	c.Limits.SetDefaults()
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Event == nil {
		c.Event = func(string) {}
	}
}

// SetDefaults fills in the zero fields.
func (c *Limits) SetDefaults() {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxHalfOpen <= 0 {
		c.MaxHalfOpen = 256
	}
	if c.HandshakeRate <= 0 {
		c.HandshakeRate = 5
	}
	if c.HandshakeBurst <= 0 {
		c.HandshakeBurst = 20
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 20000
	}
	if c.ReadBuffer <= 0 {
		c.ReadBuffer = 4 << 20
	}
}

// Server is a running CoAP-over-DTLS listener.
type Server struct {
	cfg Config
	l   *limitedListener
	srv *server.Server
}

// Listen binds the UDP socket; Serve starts serving.
func Listen(cfg Config) (*Server, error) {
	cfg.defaults()
	addr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("coaps: %w", err)
	}
	inner, err := piondtls.ListenWithOptions("udp", addr, dtlsOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("coaps: listen %s: %w", cfg.Listen, err)
	}
	s := &Server{cfg: cfg}
	s.l = newLimitedListener(inner, listenerCaps{cfg.HandshakeTimeout, int64(cfg.MaxHalfOpen), int64(cfg.MaxSessions)}, cfg.Event, cfg.Log)
	s.l.second = cfg.SecondSession
	s.srv = s.coapServer()
	return s, nil
}

// dtlsOptions are the DTLS listener's: PSK (and certificates, with the
// revocation check), connection IDs, extended master secret, the
// handshake rate per source, the cipher suites and the socket's receive
// buffer.
func dtlsOptions(cfg Config) []piondtls.ServerOption {
	limiter := sourcelimit.New(cfg.HandshakeRate, cfg.HandshakeBurst, 100000)
	opts := []piondtls.ServerOption{
		piondtls.WithPSK(func(identity []byte) ([]byte, error) {
			if key, ok := cfg.PSK(string(identity)); ok {
				return key, nil
			}
			cfg.Event("psk_unknown_identity")
			cfg.Log.Info("dtls: unknown PSK identity", "identity", string(identity))
			return nil, errors.New("unknown identity")
		}),
		piondtls.WithPSKIdentityHint([]byte("farthing")),
		piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(8)),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
		piondtls.WithOnConnectionAttempt(func(a net.Addr) error {
			if !limiter.Allow(a, time.Now()) {
				cfg.Event("rate_limited")
				cfg.Log.Debug("dtls: handshake rate limit", "remote", a)
				return errRateLimited
			}
			return nil
		}),
	}
	suites := []piondtls.CipherSuiteID{piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_CCM,
		piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256}
	if cfg.Certificate != nil {
		suites = append(suites, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
		opts = append(opts, piondtls.WithCertificates(*cfg.Certificate), piondtls.WithClientCAs(cfg.ClientCAs),
			piondtls.WithClientAuth(piondtls.RequireAndVerifyClientCert))
		if cfg.Revoked != nil {
			opts = append(opts, piondtls.WithVerifyPeerCertificate(func(_ [][]byte, chains [][]*x509.Certificate) error {
				for _, chain := range chains {
					if len(chain) > 0 && cfg.Revoked(chain[0]) {
						cfg.Event("cert_revoked")
						cfg.Log.Warn("dtls: revoked client certificate refused", "device", chain[0].Subject.CommonName,
							"serial", chain[0].SerialNumber.String())
						return errCertRevoked
					}
				}
				return nil
			}))
		}
	}
	opts = append(opts, piondtls.WithCipherSuites(suites...), piondtls.WithListenConfig(net.ListenConfig{
		Control: func(_, _ string, rc syscall.RawConn) error {
			got, err := setReadBuffer(rc, cfg.ReadBuffer)
			if err != nil {
				cfg.Log.Warn("dtls: cannot set the socket's receive buffer", "want_bytes", cfg.ReadBuffer, "error", err)
			} else if got > 0 && got < cfg.ReadBuffer {
				cfg.Log.Warn("dtls: the socket's receive buffer is smaller than asked; raise net.core.rmem_max",
					"want_bytes", cfg.ReadBuffer, "kernel_reports", got)
			}
			return nil
		}}))
	return opts
}

// coapServer is the CoAP server on the listener: tickets at Path,
// vouchers at protocol.CoAPVoucherPath, 4.04 elsewhere, idle sessions
// closed.
func (s *Server) coapServer() *server.Server {
	cfg := s.cfg
	m := mux.NewRouter()
	m.Handle("/"+cfg.Path, mux.HandlerFunc(s.serveTicket))
	if cfg.Vouchers {
		m.Handle("/"+protocol.CoAPVoucherPath, mux.HandlerFunc(s.serveVoucher))
	}
	m.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		cfg.Event("not_found")
		w.SetResponse(codes.NotFound, message.TextPlain, bytes.NewReader([]byte("tickets go to /"+cfg.Path)))
	}))
	return server.New(options.WithMux(m), options.WithMaxMessageSize(protocol.MaxTicketSize+256),
		options.WithInactivityMonitor(cfg.IdleTimeout, func(cc *udpClient.Conn) {
			cfg.Event("idle_closed")
			cc.Close()
		}),
		options.WithErrors(func(err error) { cfg.Log.Debug("coap", "error", err) }))
}

// errCertRevoked fails the handshake of a revoked certificate.
var errCertRevoked = errors.New("coaps: client certificate revoked")

// Disconnect closes every open session of device (a device revoked,
// disabled, removed or suspended) and returns how many it closed.
func (s *Server) Disconnect(device string) int { return s.l.closeDevice(device) }

// Online reports whether device has an established session now.
func (s *Server) Online(device string) bool {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return len(s.l.open[device]) > 0
}

// Connected is the number of devices with an established session.
func (s *Server) Connected() int {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	return len(s.l.open)
}

// Serving reports whether the listener is accepting new sessions now:
// false before Serve, after it, and while accepting fails.
func (s *Server) Serving() bool { return s.l.serving() }

// Addr is the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Serve serves until ctx ends; sessions in progress end with it.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan struct{})
	var stopper sync.WaitGroup
	stopper.Add(1)
	go func() { // stops the server when ctx ends; Serve waits for it
		defer stopper.Done()
		select {
		case <-ctx.Done():
			s.srv.Stop()
		case <-served:
		}
	}()
	err := s.srv.Serve(s.l)
	close(served)
	stopper.Wait()
	s.l.Close()
	return err
}

// allowedOptions are the options a ticket POST may carry; an unknown
// critical (odd-numbered) option is refused with 4.02 as RFC 7252 §5.4.1
// requires.
var allowedOptions = map[message.OptionID]bool{
	message.URIHost: true, message.URIPort: true, message.URIPath: true, message.ContentFormat: true,
	message.URIQuery: true, message.Accept: true, message.Block1: true, message.Block2: true, message.Size1: true,
}

func (s *Server) refuse(w mux.ResponseWriter, code codes.Code, event, msg string) {
	s.cfg.Event(event)
	s.cfg.Log.Info("coaps: request refused", "remote", w.Conn().RemoteAddr(), "reason", event)
	w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(msg)))
}

func (s *Server) serveTicket(w mux.ResponseWriter, r *mux.Message) {
	if r.Code() != codes.POST {
		s.refuse(w, codes.MethodNotAllowed, "bad_method", "POST a ticket")
		return
	}
	for _, o := range r.Options() {
		if uint16(o.ID)%2 == 1 && !allowedOptions[o.ID] {
			s.refuse(w, codes.BadOption, "bad_option", fmt.Sprintf("unsupported critical option %d", o.ID))
			return
		}
	}
	if cf, err := r.ContentFormat(); err != nil || (cf != ContentFormatMac0 && cf != ContentFormatSign1 && cf != ContentFormatCBOR) {
		s.refuse(w, codes.UnsupportedMediaType, "bad_content_format", "Content-Format must be application/cose (17 or 18), or application/cbor (60) for a payword ticket")
		return
	}
	var body []byte
	if r.Body() != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body(), protocol.MaxTicketSize+1))
		if err != nil {
			s.refuse(w, codes.BadRequest, "bad_body", "cannot read the payload")
			return
		}
	}
	if len(body) > protocol.MaxTicketSize {
		s.refuse(w, codes.RequestEntityTooLarge, "too_large", "ticket larger than its limit")
		return
	}
	sess, ok := w.Conn().NetConn().(*session)
	if !ok || sess.Identity() == "" {
		s.refuse(w, codes.Unauthorized, "no_identity", "no authenticated device")
		return
	}
	s.answer(w, s.cfg.Handle(r.Context(), entrance.Message{Device: sess.Identity(), Payload: body, Transport: "coaps"})())
}

// answer sends a message's receipt with the response code its status
// maps to: 2.04 accepted or duplicate, 4.00 rejected, 4.03 insufficient
// funds, 5.03 retry later (with Max-Age the seconds to wait).
func (s *Server) answer(w mux.ResponseWriter, a entrance.Answer) {
	code := codes.Changed
	switch a.Status {
	case protocol.StatusAccepted, protocol.StatusDuplicate:
	case protocol.StatusRejected:
		code = codes.BadRequest
	case protocol.StatusInsufficientFunds:
		code = codes.Forbidden
	case protocol.StatusRetryLater:
		code = codes.ServiceUnavailable
	}
	if a.Receipt == nil {
		w.SetResponse(code, message.TextPlain, nil)
		return
	}
	if err := w.SetResponse(code, ContentFormatMac0, bytes.NewReader(a.Receipt)); err != nil {
		s.cfg.Log.Warn("coaps: cannot set the response", "error", err)
		return
	}
	if a.Status == protocol.StatusRetryLater && a.RetryAfter > 0 {
		w.Message().SetOptionUint32(message.MaxAge, uint32(max(1, a.RetryAfter/time.Second)))
	}
}

// certIdentity returns the common name of the leaf certificate.
func certIdentity(raw [][]byte) string {
	if len(raw) == 0 {
		return ""
	}
	c, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return ""
	}
	return c.Subject.CommonName
}

// serveVoucher takes a voucher POSTed by an authenticated device: 2.04
// with the receipt when redeemed, 4.00 with the receipt (and its reason)
// when refused, 5.03 when it should come again.
func (s *Server) serveVoucher(w mux.ResponseWriter, r *mux.Message) {
	if r.Code() != codes.POST {
		s.refuse(w, codes.MethodNotAllowed, "bad_method", "POST a voucher")
		return
	}
	var body []byte
	if r.Body() != nil {
		var err error
		if body, err = io.ReadAll(io.LimitReader(r.Body(), protocol.MaxVoucherSize+1)); err != nil {
			s.refuse(w, codes.BadRequest, "bad_body", "cannot read the payload")
			return
		}
	}
	if len(body) > protocol.MaxVoucherSize {
		s.refuse(w, codes.RequestEntityTooLarge, "too_large", "voucher larger than its limit")
		return
	}
	sess, ok := w.Conn().NetConn().(*session)
	if !ok || sess.Identity() == "" {
		s.refuse(w, codes.Unauthorized, "no_identity", "no authenticated device")
		return
	}
	s.answer(w, s.cfg.Handle(r.Context(), entrance.Message{Device: sess.Identity(), Payload: body, Transport: "coaps"})())
}
