package gateway

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
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway/ledger"

	"golang.org/x/net/netutil"
)

// OperatorSocket is the operator API's Unix socket in the data directory.
const OperatorSocket = "operator.sock"

// OperatorConfig is the operator API: everything an operator does that is
// not a metric or a health check — inspect, inclusion proofs, profiles —
// and, later, everything that changes state. It listens on a Unix socket
// in the data directory by default (mode 0600 in a 0700 directory: the
// file system is the credential), and on TCP only with TLS and a bearer
// token or client certificates.
type OperatorConfig struct {
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

func (c *OperatorConfig) validate() error {
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

// Operator listener caps and deadlines. A connection carries one request,
// so operatorMaxConns bounds requests in progress.
const (
	operatorMaxConns    = 32
	operatorReadTimeout = 30 * time.Second
	// operatorWriteTimeout leaves room for a 30 s CPU profile.
	operatorWriteTimeout = 2 * time.Minute
)

// startOperator starts the operator API's listeners on hs; they serve
// until hs closes. A listener that cannot start is an error: the daemon
// does not run with a door the operator asked for missing.
func (g *Gateway) startOperator(hs *httpServers) error {
	c := g.cfg.Operator
	h := g.operatorMux()
	if c.Socket == "" {
		c.Socket = filepath.Join(g.cfg.DataDir, OperatorSocket)
	}
	if c.Socket != "off" {
		l, err := listenSocket(c.Socket)
		if err != nil {
			return fmt.Errorf("operator socket: %w", err)
		}
		hs.removeOnClose(c.Socket)
		hs.serve(netutil.LimitListener(l, operatorMaxConns), g.operatorServer(g.withCredential(h, func(*http.Request) (string, bool) { return "socket", true }), nil))
		g.log.Info("operator API", "socket", c.Socket)
	}
	if c.Listen != "" {
		tc, check, err := operatorTLS(c)
		if err != nil {
			return fmt.Errorf("%w: operator: %v", ErrConfig, err)
		}
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("operator: %w", err)
		}
		hs.serve(netutil.LimitListener(l, operatorMaxConns), g.operatorServer(g.withCredential(h, check), tc))
		g.operatorAddr = l.Addr().String()
		g.log.Info("operator API", "addr", "https://"+g.operatorAddr)
	}
	return nil
}

// operatorServer is the operator API's HTTP server: deadlines, and one
// request per connection, so a client that keeps idle connections open
// cannot hold the capped slots.
func (g *Gateway) operatorServer(h http.Handler, tc *tls.Config) *http.Server {
	srv := &http.Server{Handler: h, TLSConfig: tc, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: operatorReadTimeout,
		WriteTimeout: operatorWriteTimeout, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: g.httpErrorLog()}
	srv.SetKeepAlivesEnabled(false)
	return srv
}

// listenSocket listens on a Unix socket at path with mode 0600. A socket
// left by a daemon that died is removed; one that answers belongs to a
// daemon still running, and is an error.
func listenSocket(path string) (net.Listener, error) {
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

// operatorTLS builds the TCP listener's TLS configuration and the check
// that a request carries a credential: a verified client certificate, or
// the bearer token.
func operatorTLS(c OperatorConfig) (*tls.Config, func(*http.Request) (string, bool), error) {
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
		if token, err = loadToken(c.TokenFile); err != nil {
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

func credentialOf(r *http.Request) string {
	who, _ := r.Context().Value(credentialKey{}).(string)
	return who
}

// withCredential refuses a request without a credential (401, counted,
// logged without what was sent) and logs every operator request with the
// kind of credential that made it.
func (g *Gateway) withCredential(h http.Handler, check func(*http.Request) (string, bool)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := check(r)
		if !ok {
			g.metrics.Transport.WithLabelValues("operator", "unauthorized").Inc()
			g.log.Warn("operator API: request without a valid credential", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="farthing"`)
			http.Error(w, "a bearer token or a client certificate is required", http.StatusUnauthorized)
			return
		}
		g.log.Info("operator API", "credential", who, "method", r.Method, "path", r.URL.Path)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), credentialKey{}, who)))
	})
}

// operatorMux serves the operator's calls: GET /inspect (the state file's
// report), GET /proof?ticket=DEVICE/SEQ (inclusion proofs), the accounts
// (see accountRoutes), vouchers, the device check (deviceRoutes), the held
// tickets (quarantineRoutes) and, when enabled, /debug/pprof/.
func (g *Gateway) operatorMux() *http.ServeMux {
	m := http.NewServeMux()
	if g.cfg.Operator.Pprof {
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
		ps, err := ledger.TicketProofs(g.store, dev, seq)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, g.log, ps)
	})
	g.accountRoutes(m)
	g.voucherRoutes(m)
	g.deviceRoutes(m)
	g.quarantineRoutes(m)
	g.backupRoutes(m)
	m.HandleFunc("GET /inspect", func(w http.ResponseWriter, _ *http.Request) {
		rep, err := ledger.Inspect(g.store, &g.ingest.Snapshot().Terms)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, g.log, rep)
	})
	return m
}

func writeJSON(w http.ResponseWriter, log *slog.Logger, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Debug("operator API: response not written", "error", err)
	}
}

// httpErrorLog sends net/http's own messages (a TLS handshake that failed,
// a malformed request) to the gateway's log at debug level: they are a
// client's problem, and the refusals that matter are counted and logged
// where they are decided.
func (g *Gateway) httpErrorLog() *log.Logger {
	return slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)
}
