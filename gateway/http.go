package gateway

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/farthing-iot/farthing/gateway/console"
	"github.com/farthing-iot/farthing/gateway/operator"
)

// mux is the HTTP listener's: /metrics, /healthz and /readyz, open to
// whoever reaches the listener, and the web console under /console/ (see
// console.go for who may read and change what). The operator API has its
// own listeners.
func (g *Gateway) mux() *http.ServeMux {
	m := http.NewServeMux()
	if g.console != nil {
		g.console.Routes(m)
	}
	m.Handle("/metrics", promhttp.HandlerFor(g.metrics.Registry, promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		why, detail := g.notReady(), strings.Join(nonEmpty(g.refusedDetail(), g.clock.detail()), "\n")
		if why != "" {
			if detail != "" {
				why += "\n" + detail
			}
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
		if detail != "" {
			fmt.Fprintln(w, detail)
		}
	})
	return m
}

// listenerCheck names a transport listener and tells whether it is
// accepting now.
type listenerCheck struct {
	name    string
	serving func() bool
}

// notReady returns why the gateway cannot take tickets now ("" if it
// can): starting, a transport listener not accepting, or storage near its
// bound.
func (g *Gateway) notReady() string {
	select {
	case <-g.ready:
	default:
		return "starting"
	}
	var why []string
	for _, l := range g.listeners {
		if !l.serving() {
			why = append(why, l.name+" not accepting tickets")
		}
	}
	if g.ingest.Full() {
		why = append(why, "storage near its bound")
	}
	return strings.Join(why, "; ")
}

// httpServers owns the gateway's HTTP servers (metrics, operator API):
// each serves on a goroutine of its own, which close waits for.
type httpServers struct {
	wg      sync.WaitGroup
	servers []*http.Server
	files   []string // Unix sockets to remove on close
}

// serve runs srv on l (with TLS if srv.TLSConfig is set) until close.
func (hs *httpServers) serve(l net.Listener, srv *http.Server) {
	hs.servers = append(hs.servers, srv)
	hs.wg.Add(1)
	go func() {
		defer hs.wg.Done()
		if srv.TLSConfig != nil {
			srv.ServeTLS(l, "", "")
		} else {
			srv.Serve(l)
		}
	}()
}

func (hs *httpServers) removeOnClose(path string) { hs.files = append(hs.files, path) }

// close shuts every server down (requests in progress get 2 s), waits for
// their goroutines and removes the sockets.
func (hs *httpServers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range hs.servers {
		if s.Shutdown(ctx) != nil {
			s.Close()
		}
	}
	hs.wg.Wait()
	for _, f := range hs.files {
		os.Remove(f)
	}
}

// metricsMaxConns caps the metrics listener's connections: scrapers and
// health checks, a handful at a time.
const metricsMaxConns = 64

// startMetrics starts the HTTP listener (/metrics, /healthz, /readyz and
// the console) on hs, unless http.listen is off.
func (g *Gateway) startMetrics(hs *httpServers) error {
	if g.cfg.HTTP.Listen == "off" {
		return nil
	}
	l, err := net.Listen("tcp", g.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	g.httpLis = l
	if g.cfg.HTTP.Console != "off" {
		if g.console, err = console.New(g.consoleDeps()); err != nil {
			l.Close()
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	hs.serve(netutil.LimitListener(l, metricsMaxConns), &http.Server{Handler: g.mux(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: g.httpErrorLog()})
	g.log.Info("metrics and health", "addr", "http://"+l.Addr().String()+"/metrics")
	if g.console != nil {
		g.log.Info("web console", "addr", "http://"+l.Addr().String()+"/console/", "changes", g.console.CanWrite())
	}
	return nil
}

// startOperator starts the operator API's listeners on hs; they serve
// until hs closes. A listener that cannot start is an error: the daemon
// does not run with a door the operator asked for missing.
func (g *Gateway) startOperator(hs *httpServers) error {
	c := g.cfg.Operator
	api := operator.New(operator.Deps{Store: g.store, Ingest: g.ingest, Metrics: g.metrics.Metrics, Log: g.log,
		Online: g.onlineOver, Pprof: c.Pprof})
	if c.Socket == "" {
		c.Socket = filepath.Join(g.cfg.DataDir, operator.Socket)
	}
	if c.Socket != "off" {
		l, err := operator.ListenSocket(c.Socket)
		if err != nil {
			return fmt.Errorf("operator socket: %w", err)
		}
		hs.removeOnClose(c.Socket)
		socket := func(*http.Request) (string, bool) { return "socket", true }
		hs.serve(netutil.LimitListener(l, operator.MaxConns), operator.Server(api.WithCredential(socket), nil, g.httpErrorLog()))
		g.log.Info("operator API", "socket", c.Socket)
	}
	if c.Listen != "" {
		tc, check, err := operator.TLS(c)
		if err != nil {
			return fmt.Errorf("%w: operator: %v", ErrConfig, err)
		}
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("operator: %w", err)
		}
		hs.serve(netutil.LimitListener(l, operator.MaxConns), operator.Server(api.WithCredential(check), tc, g.httpErrorLog()))
		g.operatorAddr = l.Addr().String()
		g.log.Info("operator API", "addr", "https://"+g.operatorAddr)
	}
	return nil
}

// onlineOver returns the transports the device has a session over now.
func (g *Gateway) onlineOver(device string) []string {
	var out []string
	for t, d := range g.transportSessions() {
		if d.online(device) {
			out = append(out, t)
		}
	}
	return out
}

// httpErrorLog sends net/http's own messages (a TLS handshake that failed,
// a malformed request) to the gateway's log at debug level: they are a
// client's problem, and the refusals that matter are counted and logged
// where they are decided.
func (g *Gateway) httpErrorLog() *log.Logger {
	return slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)
}

// consoleDeps is what the console shows and acts on.
func (g *Gateway) consoleDeps() console.Deps {
	d := console.Deps{Store: g.store, Ingest: g.ingest, Metrics: g.metrics.Metrics, Gatherer: g.metrics.Registry, Log: g.log,
		GatewayID: g.cfg.GatewayID, ExternalMQTT: g.cfg.MQTT.Mode == "external", TokenFile: g.cfg.Operator.TokenFile,
		Limits: map[string]console.AccountLimits{}, Online: g.onlineOver, Connected: g.connected, Clock: g.clock.detail,
		Sending: func(upstream string) uint64 {
			if f := g.forwarder; f != nil {
				return f.Sending(upstream)
			}
			return 0
		}}
	for _, u := range g.cfg.Upstreams {
		d.Upstreams = append(d.Upstreams, u.Name)
	}
	for _, a := range g.cfg.Accounts {
		d.Limits[a.ID] = console.AccountLimits{DailyCap: a.DailyCap, MonthlyCap: a.MonthlyCap, LowBalance: a.LowBalance}
	}
	return d
}

// connected returns the number of device sessions per transport.
func (g *Gateway) connected() map[string]int {
	out := map[string]int{}
	for t, d := range g.transportSessions() {
		out[t] = d.connected()
	}
	return out
}

// nonEmpty returns the strings of ss that are not empty.
func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
