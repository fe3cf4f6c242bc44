// Package operator is the operator API: everything an operator does that
// is not a metric or a health check — inspect, inclusion proofs, accounts
// and top-ups, vouchers, devices and payword chains, the quarantine,
// backups, profiles. It is served on a Unix socket in the data directory
// (the file system is the credential) and on TCP only with TLS and a
// bearer token or client certificates. Every request is logged with the
// kind of credential that made it; every change is audited by the books.
package operator

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/store"
)

// Socket is the operator API's Unix socket in the data directory.
const Socket = "operator.sock"

// Config is the operator API: everything an operator does that is
// not a metric or a health check — inspect, inclusion proofs, profiles —
// and, later, everything that changes state. It listens on a Unix socket
// in the data directory by default (mode 0600 in a 0700 directory: the
// file system is the credential), and on TCP only with TLS and a bearer
// token or client certificates.
type Config struct {
	// Socket is the Unix socket's path; default DataDir/operator.sock;
	// "off" disables it.
	Socket string `yaml:"socket"`
	// Listen is a TCP address for the API; default none. It requires
	// CertFile and KeyFile, and TokenFile or ClientCAFile (or both: either
	// credential is then enough).
	Listen   string `yaml:"listen"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// TokenFile holds the bearer token (one line); it must be mode 0600.
	TokenFile string `yaml:"token_file"`
	// ClientCAFile (PEM) issues the client certificates the API accepts.
	ClientCAFile string `yaml:"client_ca_file"`
	// Pprof serves /debug/pprof/ on the operator API; default off.
	Pprof bool `yaml:"pprof"`
}

// Validate refuses a TCP listener without TLS or without a credential.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("operator.listen needs operator.cert_file and operator.key_file: the TCP operator API speaks TLS only")
	}
	if c.TokenFile == "" && c.ClientCAFile == "" {
		return errors.New("operator.listen needs operator.token_file or operator.client_ca_file: the TCP operator API is never open")
	}
	return nil
}

// Listener caps and deadlines. A connection carries one request, so
// MaxConns bounds requests in progress.
const (
	// MaxConns bounds the connections of each operator listener.
	MaxConns            = 32
	operatorReadTimeout = 30 * time.Second
	// operatorWriteTimeout leaves room for a 30 s CPU profile.
	operatorWriteTimeout = 2 * time.Minute
)

// Server is the operator API's HTTP server for h: deadlines, and one
// request per connection, so a client that keeps idle connections open
// cannot hold the capped slots; net/http's own messages go to errorLog.
func Server(h http.Handler, tc *tls.Config, errorLog *log.Logger) *http.Server {
	srv := &http.Server{Handler: h, TLSConfig: tc, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: operatorReadTimeout,
		WriteTimeout: operatorWriteTimeout, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: errorLog}
	srv.SetKeepAlivesEnabled(false)
	return srv
}

// ListenSocket listens on a Unix socket at path with mode 0600. A socket
// left by a daemon that died is removed; one that answers belongs to a
// daemon still running, and is an error.
func ListenSocket(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another daemon is serving it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// The data directory is 0700, so no one else can reach the socket in
	// the moment before this.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// TLS builds the TCP listener's TLS configuration and the check
// that a request carries a credential: a verified client certificate, or
// the bearer token.
func TLS(c Config) (*tls.Config, func(*http.Request) (string, bool), error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cert_file/key_file: %v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("client_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client_ca_file: no certificate in %s", c.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	var token [sha256.Size]byte
	hasToken := c.TokenFile != ""
	if hasToken {
		if token, err = LoadToken(c.TokenFile); err != nil {
			return nil, nil, err
		}
	}
	check := func(r *http.Request) (string, bool) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			return "cert:" + r.TLS.VerifiedChains[0][0].Subject.CommonName, true
		}
		if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && hasToken {
			h := sha256.Sum256([]byte(got))
			if subtle.ConstantTimeCompare(h[:], token[:]) == 1 {
				return "token", true
			}
		}
		return "", false
	}
	return tc, check, nil
}

// credentialKey carries the kind of credential that made an operator
// request ("socket", "token", "cert:NAME") to the handlers, for the audit
// log.
type credentialKey struct{}

// ContextWithCredential returns ctx carrying the kind of credential that
// made a request, for a caller that authenticated it itself (the console).
func ContextWithCredential(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, credentialKey{}, who)
}

// CredentialOf is the kind of credential that made the request ("socket",
// "token", "cert:NAME"), for the audit log; "" outside the operator API.
func CredentialOf(r *http.Request) string {
	who, _ := r.Context().Value(credentialKey{}).(string)
	return who
}

// WithCredential refuses a request without a credential (401, counted,
// logged without what was sent) and logs every operator request with the
// kind of credential that made it; check says who made it.
func (a *API) WithCredential(check func(*http.Request) (string, bool)) http.Handler {
	h := a.mux
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := check(r)
		if !ok {
			a.metrics.Transport.WithLabelValues("operator", "unauthorized").Inc()
			a.log.Warn("operator API: request without a valid credential", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="farthing"`)
			http.Error(w, "a bearer token or a client certificate is required", http.StatusUnauthorized)
			return
		}
		a.log.Info("operator API", "credential", who, "method", r.Method, "path", r.URL.Path)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), credentialKey{}, who)))
	})
}

// Deps is what the operator API works on.
type Deps struct {
	Store   *store.Store
	Ingest  *ingest.Ingest
	Metrics *ingest.Metrics // operator events count in farthing_transport_events_total
	Log     *slog.Logger
	// Online returns the transports a device has a session over now.
	Online func(device string) []string
	// Pprof serves /debug/pprof/ (Config.Pprof).
	Pprof bool
}

// API is the operator API's handler; WithCredential serves it.
type API struct {
	store   *store.Store
	ingest  *ingest.Ingest
	metrics *ingest.Metrics
	log     *slog.Logger
	online  func(device string) []string
	pprof   bool
	mux     *http.ServeMux
}

// New returns the operator API over d.
func New(d Deps) *API {
	a := &API{store: d.Store, ingest: d.Ingest, metrics: d.Metrics, log: d.Log, online: d.Online, pprof: d.Pprof}
	a.mux = a.newMux()
	return a
}

// newMux serves the operator's calls: GET /inspect (the state file's
// report), GET /proof?ticket=DEVICE/SEQ (inclusion proofs), the accounts
// (see accountRoutes), vouchers, the device check (deviceRoutes), the held
// tickets (quarantineRoutes), the tariff versions and commands applied
// (controlRoutes) and, when enabled, /debug/pprof/.
func (a *API) newMux() *http.ServeMux {
	m := http.NewServeMux()
	if a.pprof {
		m.HandleFunc("/debug/pprof/", pprof.Index)
		m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		m.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.HandleFunc("/debug/pprof/trace", pprof.Trace)
		m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	m.HandleFunc("GET /proof", func(w http.ResponseWriter, r *http.Request) {
		dev, seqStr, _ := strings.Cut(r.URL.Query().Get("ticket"), "/")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil || dev == "" {
			http.Error(w, "want ?ticket=DEVICE/SEQ", http.StatusBadRequest)
			return
		}
		ps, err := a.ingest.Books().TicketProofs(dev, seq)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, a.log, ps)
	})
	a.accountRoutes(m)
	a.voucherRoutes(m)
	a.deviceRoutes(m)
	a.quarantineRoutes(m)
	a.backupRoutes(m)
	a.controlRoutes(m)
	m.HandleFunc("GET /inspect", func(w http.ResponseWriter, _ *http.Request) {
		rep, err := a.ingest.Books().Inspect(&a.ingest.Snapshot().Terms)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, a.log, rep)
	})
	return m
}

func writeJSON(w http.ResponseWriter, log *slog.Logger, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debug("operator API: response not written", "error", err)
	}
}

// LoadToken reads the operator token from path, which must be mode 0600
// and hold at least 16 characters; it returns the token's SHA-256.
func LoadToken(path string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	fi, err := os.Stat(path)
	if err != nil {
		return h, fmt.Errorf("token_file: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return h, fmt.Errorf("token_file %s is mode %v: a secret must be 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return h, fmt.Errorf("token_file: %v", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return h, fmt.Errorf("token_file %s: the token is shorter than 16 characters", path)
	}
	return sha256.Sum256([]byte(t)), nil
}
