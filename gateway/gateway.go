package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/farthing-iot/farthing/gateway/coaps"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/mqtt"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/gateway/upstream/httpsink"
	"github.com/farthing-iot/farthing/gateway/upstream/jetstreamsink"
	"github.com/farthing-iot/farthing/gateway/upstream/mqttsink"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// StateFile is the name of the state file in the data directory.
const StateFile = "state.db"

// Gateway is a running daemon.
type Gateway struct {
	cfg     *Config
	log     *slog.Logger
	store   *store.Store
	ingest  *Ingest
	metrics *Metrics
	gc      *gcTuner
	key     ed25519.PrivateKey

	mu     sync.Mutex // guards mtimes
	mtimes [2]time.Time

	ready     chan struct{} // closed once the transports listen
	httpLis   net.Listener
	coapAddr  string
	listeners []listenerCheck // set before ready is closed
	// operatorAddr is the operator API's TCP address once ready ("" if off).
	operatorAddr string
	// minFree is limits.min_free_bytes as worked out at start-up.
	minFree int64
	// While the store is full (housekeeping's goroutine only): since when,
	// the refusal count when it filled, and when it was last logged.
	fullSince, fullLogged time.Time
	fullReported          uint64
}

// New opens the data directory (creating the gateway key on first start)
// and loads tariffs and devices. Run starts serving. A nil log means
// slog.Default().
func New(cfg *Config, log *slog.Logger) (*Gateway, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.setDefaults(); err != nil { // a zero Config works
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, metrics: NewMetrics(), gc: newGCTuner(), ready: make(chan struct{})}
	k, err := keyfile.Load(cfg.KeyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if k, err = keyfile.GenerateEd25519(); err != nil {
			return nil, err
		}
		pem, _ := k.EncodePrivate()
		if err := keyfile.WriteNew(cfg.KeyFile, pem, 0o600); err != nil {
			return nil, fmt.Errorf("gateway key: %w", err)
		}
		pub, _ := k.EncodePublic()
		keyfile.WriteNew(cfg.KeyFile+".pub", pub, 0o644)
		log.Info("generated the gateway key", "private", cfg.KeyFile, "public", cfg.KeyFile+".pub")
	case err != nil:
		return nil, fmt.Errorf("gateway key: %w", err)
	case k.Private == nil:
		return nil, fmt.Errorf("gateway key %s: want an Ed25519 private key, found a %s", cfg.KeyFile, k.Kind())
	}
	g.key = k.Private
	g.minFree = g.minFreeFloor()
	kid := protocol.KeyIDOf(protocol.AlgEdDSA, k.Private.Public().(ed25519.PublicKey))
	cfg.setKeyDefaults(kid)
	snap, err := g.loadSnapshot()
	if err != nil {
		return nil, err
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, StateFile), store.Options{MaxBatch: cfg.Commit.MaxBatch, Linger: cfg.Commit.Linger,
		OnCommit: func(ops int, took time.Duration) {
			g.metrics.BatchSize.Observe(float64(ops))
			g.metrics.CommitTx.Observe(took.Seconds())
		}})
	if err != nil {
		return nil, err
	}
	g.store = st
	signer, err := protocol.NewEd25519Signer(g.key)
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := ledger.Init(context.Background(), st); err != nil {
		st.Close()
		return nil, err
	}
	epoch, err := ledger.StreamEpoch(context.Background(), st)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("stream epoch: %w", err)
	}
	stream, _ := protocol.StreamOf(kid[:], epoch)
	books := ledger.New(st, ledger.Config{Signer: signer, Stream: stream,
		OnSeal: func(reason string) { g.metrics.Sealed.WithLabelValues(reason).Inc() }})
	g.ingest = NewIngest(books, snap, cfg.Limits, g.metrics, log)
	log.Info("aggregate stream", "gateway", cfg.GatewayID, "stream", stream.String())
	return g, nil
}

// Ingest returns the pipeline, for transports added from outside.
func (g *Gateway) Ingest() *Ingest { return g.ingest }

// Store returns the state store.
func (g *Gateway) Store() *store.Store { return g.store }

// Ready is closed once the gateway serves.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// HTTPAddr is the address of the metrics endpoint once ready ("" if off).
func (g *Gateway) HTTPAddr() string {
	if g.httpLis == nil {
		return ""
	}
	return g.httpLis.Addr().String()
}

// loadSnapshot reads the tariff and device files and the configuration
// into a snapshot. A missing file is empty (every ticket is refused).
func (g *Gateway) loadSnapshot() (*Snapshot, error) {
	snap := &Snapshot{Terms: ledger.Terms{GatewayID: g.cfg.GatewayID, Policies: map[string]metering.Policy{}, Accounts: map[string]metering.Account{}}}
	for _, a := range g.cfg.Accounts {
		acct, _ := a.Opening()
		snap.Accounts[a.ID] = acct
	}
	for _, p := range g.cfg.Providers {
		snap.Policies[p.ID], _ = p.Policy()
	}
	var mt [2]time.Time
	if b, err := os.ReadFile(g.cfg.Tariffs); err == nil {
		if snap.Tariffs, err = metering.ParseTariffs(g.cfg.Tariffs, b); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(g.cfg.Tariffs); err == nil {
			mt[0] = fi.ModTime()
		}
	} else if errors.Is(err, os.ErrNotExist) {
		snap.Tariffs = &metering.TariffSet{}
		g.log.Warn("no tariff file: every ticket is refused until one exists", "path", g.cfg.Tariffs)
	} else {
		return nil, err
	}
	rf, err := ReadRegistryFile(g.cfg.Devices)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(g.cfg.Devices); err == nil {
		mt[1] = fi.ModTime()
	}
	if snap.Registry, err = BuildRegistry(g.cfg.Devices, rf, snap); err != nil {
		return nil, err
	}
	// Parsing a large registry file takes several times the memory the
	// registry keeps; give the rest back to the system now rather than
	// over the next minutes.
	debug.FreeOSMemory()
	g.mu.Lock()
	g.mtimes = mt
	g.mu.Unlock()
	return snap, nil
}

// Reload re-reads the tariff and device files. On an error the gateway
// keeps its current configuration and returns the error. Tickets in flight
// finish with the snapshot they started with.
func (g *Gateway) Reload() error {
	snap, err := g.loadSnapshot()
	if err != nil {
		g.log.Error("reload refused: keeping the current devices and tariffs", "error", err)
		return err
	}
	g.ingest.Reload(snap)
	g.log.Info("reloaded", "devices", snap.Registry.Len(), "tariffs", len(snap.Tariffs.Tariffs))
	return nil
}

// handle is the MQTT transports' handler.
func (g *Gateway) handle(transport string) mqtt.Handler {
	return func(ctx context.Context, device string, payload []byte) mqtt.Reply {
		p := g.ingest.Start(ctx, Submission{Device: device, Payload: payload, Transport: transport})
		return func() ([]byte, bool) {
			res := p.Wait()
			return res.Bytes, res.Receipt.Status != protocol.StatusRetryLater
		}
	}
}

func (g *Gateway) handleCoAP(ctx context.Context, device string, payload []byte) ([]byte, protocol.Status, time.Duration) {
	res := g.ingest.Submit(ctx, Submission{Device: device, Payload: payload, Transport: "coaps"})
	return res.Bytes, res.Receipt.Status, time.Duration(res.Receipt.RetryAfter) * time.Millisecond
}

func (g *Gateway) dtlsPSK(identity string) ([]byte, bool) {
	d := g.ingest.Snapshot().Registry.Device(identity)
	if d == nil || d.Disabled {
		return nil, false
	}
	return d.DTLSPSK(), true
}

// loadDTLSCerts reads the certificate files of the DTLS listener, if set.
func loadDTLSCerts(c DTLSConfig) (*tls.Certificate, *x509.CertPool, error) {
	if c.CertFile == "" && c.KeyFile == "" && c.ClientCAFile == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: dtls.cert_file/key_file: %v", ErrConfig, err)
	}
	pem, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: dtls.client_ca_file: %v", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%w: dtls.client_ca_file: no certificate in %s", ErrConfig, c.ClientCAFile)
	}
	return &cert, pool, nil
}

// OperatorAddr is the operator API's TCP address once ready ("" if it
// listens on its Unix socket only).
func (g *Gateway) OperatorAddr() string { return g.operatorAddr }

// CoAPAddr is the DTLS listener's UDP address once ready ("" if off).
func (g *Gateway) CoAPAddr() string { return g.coapAddr }

func (g *Gateway) authenticate(device string, password []byte) bool {
	d := g.ingest.Snapshot().Registry.Device(device)
	return d != nil && !d.Disabled && d.CheckMQTTPassword(password)
}

// Run serves until ctx ends, then shuts down gracefully: transports stop
// taking tickets, tickets in flight finish their commits, the store
// closes.
func (g *Gateway) Run(ctx context.Context) (err error) {
	tctx, stopTransports := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var api *operatorAPI
	var srv *http.Server
	// One teardown for every exit: transports stop, goroutines end, the
	// servers close, the store closes last.
	defer func() {
		stopTransports()
		wg.Wait()
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			srv.Shutdown(sctx)
			cancel()
		}
		if api != nil {
			api.close()
		}
		if cerr := g.store.Close(); err == nil {
			err = cerr
		}
		g.log.Info("stopped")
	}()
	errc := make(chan error, 4)
	if err := g.startMQTT(ctx, tctx, &wg, errc); err != nil {
		return err
	}
	if err := g.startDTLS(tctx, &wg); err != nil {
		return err
	}
	if g.cfg.HTTP.Listen != "off" {
		l, err := net.Listen("tcp", g.cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		g.httpLis = l
		srv = &http.Server{Handler: g.mux(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: g.httpErrorLog()}
		go srv.Serve(netutil.LimitListener(l, metricsMaxConns))
		g.log.Info("metrics and health", "addr", "http://"+l.Addr().String()+"/metrics")
	}
	var oerr error
	if api, oerr = g.startOperator(); oerr != nil {
		return oerr
	}
	if err := g.startForwarders(tctx, &wg); err != nil {
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); g.housekeeping(tctx) }()
	close(g.ready)

	select {
	case <-ctx.Done():
	case err = <-errc:
		g.log.Error("transport failed", "error", err)
	}
	g.log.Info("shutting down: finishing tickets in flight")
	return err
}

// metricsMaxConns caps the metrics listener's connections: scrapers and
// health checks, a handful at a time.
const metricsMaxConns = 64

// startMQTT starts the embedded broker, or the client of an external one
// and waits for its subscription (ready means tickets can arrive).
func (g *Gateway) startMQTT(ctx, tctx context.Context, wg *sync.WaitGroup, errc chan error) error {
	topics := mqtt.Topics{Prefix: g.cfg.MQTT.TopicPrefix}
	event := func(e string) { g.metrics.Transport.WithLabelValues("mqtt", e).Inc() }
	switch g.cfg.MQTT.Mode {
	case "embedded":
		b, err := mqtt.NewBroker(mqtt.BrokerConfig{Listen: g.cfg.MQTT.Listen, Topics: topics, Handle: g.handle("mqtt"),
			Authenticate: g.authenticate, Log: g.log, Event: event, SessionExpiry: g.cfg.MQTT.SessionExpiry,
			ReceiptQoS: byte(g.cfg.MQTT.ReceiptQoS), Door: g.cfg.MQTT.DoorConfig})
		if err != nil {
			return err
		}
		g.listeners = append(g.listeners, listenerCheck{"mqtt", b.Serving})
		wg.Add(1)
		go func() { defer wg.Done(); errc <- b.Serve(tctx) }()
		g.log.Info("embedded MQTT broker listening", "addr", b.Addr(), "tickets", topics.TicketFilter())
	case "external":
		subscribed := make(chan struct{})
		var once sync.Once
		var up atomic.Bool
		g.listeners = append(g.listeners, listenerCheck{"mqtt", up.Load})
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- mqtt.RunClient(tctx, mqtt.ClientConfig{Broker: g.cfg.MQTT.Broker, ClientID: g.cfg.MQTT.ClientID,
				Username: g.cfg.MQTT.Username, Password: g.cfg.MQTT.Password, Topics: topics, Handle: g.handle("mqtt"), Log: g.log, Event: event, ReceiptQoS: byte(g.cfg.MQTT.ReceiptQoS),
				Subscribed: func() { up.Store(true); once.Do(func() { close(subscribed) }) },
				Lost:       func() { up.Store(false) }})
		}()
		select {
		case <-subscribed:
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
	}
	return nil
}

// startDTLS starts the CoAP-over-DTLS listener unless it is off.
func (g *Gateway) startDTLS(tctx context.Context, wg *sync.WaitGroup) error {
	if g.cfg.DTLS.Listen == "off" {
		return nil
	}
	c := g.cfg.DTLS
	cert, cas, err := loadDTLSCerts(c)
	if err != nil {
		return err
	}
	cs, err := coaps.Listen(coaps.Config{Listen: c.Listen, Handle: g.handleCoAP, PSK: g.dtlsPSK, Log: g.log,
		Certificate: cert, ClientCAs: cas, Limits: c.Limits,
		Event: func(e string) { g.metrics.Transport.WithLabelValues("coaps", e).Inc() }})
	if err != nil {
		return err
	}
	g.coapAddr = cs.Addr().String()
	g.listeners = append(g.listeners, listenerCheck{"dtls", cs.Serving})
	wg.Add(1)
	go func() { defer wg.Done(); cs.Serve(tctx) }()
	g.log.Info("CoAP over DTLS listening", "addr", g.coapAddr, "path", "/"+protocol.CoAPTicketPath)
	return nil
}

// startForwarders starts one forwarder per configured upstream; each
// stops when ctx ends.
func (g *Gateway) startForwarders(ctx context.Context, wg *sync.WaitGroup) error {
	var names []string
	for _, u := range g.cfg.Upstreams {
		names = append(names, u.Name)
	}
	f := NewForwarder(g.ingest, names)
	for _, u := range g.cfg.Upstreams {
		var up Upstream
		switch u.Type {
		case "mqtt":
			up = mqttsink.New(mqttsink.Config{Broker: u.URL, ClientID: "farthing-" + g.cfg.GatewayID + "-" + u.Name,
				Username: u.Username, Password: u.Password, TopicPrefix: u.Topic})
		case "http":
			h := http.Header{}
			for k, v := range u.Header {
				h.Set(k, v)
			}
			up = httpsink.New(httpsink.Config{URL: u.URL, Header: h})
		case "jetstream":
			s, err := jetstreamsink.New(ctx, jetstreamsink.Config{URL: u.URL, Stream: u.Stream, SubjectPrefix: u.Topic,
				Create: u.CreateStream, Replicas: u.Replicas, Name: "farthing-" + g.cfg.GatewayID})
			if err != nil {
				return err
			}
			up = s
		}
		fc := ForwardConfig{Name: u.Name, Providers: u.Providers, ForwardSettings: g.cfg.Forward}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer up.Close()
			if err := f.Run(ctx, up, fc); err != nil {
				g.log.Error("forwarder stopped", "upstream", fc.Name, "error", err)
			}
		}()
		g.log.Info("forwarding aggregates", "upstream", u.Name, "type", u.Type, "url", u.URL)
	}
	return nil
}

// memoryRelease is how often housekeeping returns unused memory.
const memoryRelease = time.Minute

// housekeeping closes windows whose end passed, watches the store's size
// and the disk, reloads the configuration files when they change, and
// every memoryRelease gives memory the gateway no longer uses back to the
// system.
func (g *Gateway) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	released := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.gc.tune()
			if now.Sub(released) >= memoryRelease {
				// A collection also shrinks the stacks of idle connections'
				// goroutines, which grew while they handled tickets: with
				// 10,000 idle devices on the embedded broker this halves the
				// resident memory. It costs one collection a minute.
				debug.FreeOSMemory()
				released = now
			}
			if err := g.ingest.CloseWindows(ctx, now); err != nil && ctx.Err() == nil {
				g.log.Warn("closing windows failed", "error", err)
			}
			g.watchDisk()
			g.watchFiles()
			var names []string
			for _, u := range g.cfg.Upstreams {
				names = append(names, u.Name)
			}
			if _, err := g.ingest.PruneTickets(ctx, names, g.cfg.Limits.AuditRetention, now); err != nil && ctx.Err() == nil {
				g.log.Warn("pruning tickets failed", "error", err)
			}
		}
	}
}

func (g *Gateway) watchDisk() {
	st := g.store.Stats()
	g.metrics.StoreBytes.Set(float64(st.FileBytes))
	g.metrics.OldestSealed.Set(g.ingest.books.OldestUnforwarded(time.Now()).Seconds())
	full := st.FileBytes > g.cfg.Limits.MaxStoreBytes
	var fs syscall.Statfs_t
	if err := syscall.Statfs(g.cfg.DataDir, &fs); err == nil && int64(fs.Bavail)*int64(fs.Bsize) < g.minFree {
		full = true
	}
	refused := g.ingest.fullRefused.Load()
	switch was := g.ingest.full.Load(); {
	case full && !was:
		g.log.Warn("storage near its bound: new tickets are answered retry later until space comes back",
			"state_bytes", st.FileBytes, "max_store_bytes", g.cfg.Limits.MaxStoreBytes, "free_bytes", int64(fs.Bavail)*int64(fs.Bsize), "min_free_bytes", g.minFree)
		g.fullSince, g.fullReported, g.fullLogged = time.Now(), refused, time.Now()
	case !full && was:
		g.log.Info("storage back under its bound: tickets accepted again", "retry_later_answers", refused-g.fullReported,
			"for", time.Since(g.fullSince).Round(time.Second))
	case full && time.Since(g.fullLogged) >= fullLogEvery && refused != g.fullReported:
		// One line a minute while full, not one per refused ticket.
		g.log.Warn("storage still near its bound", "retry_later_answers_since_full", refused-g.fullReported,
			"for", time.Since(g.fullSince).Round(time.Second))
		g.fullLogged = time.Now()
	}
	g.ingest.SetFull(full)
}

// fullLogEvery is how often a full store is logged while it stays full.
const fullLogEvery = time.Minute

// Free-space floor defaults: defaultMinFree, or minFreeShare of the file
// system if that is less.
const (
	defaultMinFree = 64 << 20
	minFreeShare   = 20 // 1/20 = 5%
)

// minFreeFor is the free-space floor for a file system of size bytes: the
// configured one, or by default defaultMinFree or minFreeShare of the file
// system, whichever is less.
func minFreeFor(configured, size int64) int64 {
	if configured != 0 {
		return configured
	}
	return min(defaultMinFree, size/minFreeShare)
}

// minFreeFloor works out limits.min_free_bytes for the data directory's
// file system and says at start-up what it is against what is free.
func (g *Gateway) minFreeFloor() int64 {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(g.cfg.DataDir, &fs); err != nil {
		g.log.Warn("cannot read the data directory's file system; free space is not watched", "error", err)
		return 0
	}
	size, free := int64(fs.Blocks)*int64(fs.Bsize), int64(fs.Bavail)*int64(fs.Bsize)
	floor := minFreeFor(g.cfg.Limits.MinFreeBytes, size)
	if free < floor {
		g.log.Error("the data directory's file system has less free space than limits.min_free_bytes: every ticket will be answered retry later",
			"free_bytes", free, "min_free_bytes", floor, "filesystem_bytes", size)
	} else {
		g.log.Info("free-space floor", "min_free_bytes", floor, "free_bytes", free, "filesystem_bytes", size)
	}
	return floor
}

func (g *Gateway) watchFiles() {
	var mt [2]time.Time
	for i, p := range []string{g.cfg.Tariffs, g.cfg.Devices} {
		if fi, err := os.Stat(p); err == nil {
			mt[i] = fi.ModTime()
		}
	}
	g.mu.Lock()
	changed := mt != g.mtimes
	g.mu.Unlock()
	if changed {
		g.Reload()
		g.mu.Lock()
		g.mtimes = mt // do not retry a broken file every second
		g.mu.Unlock()
	}
}

// mux is the metrics listener's: /metrics, /healthz and /readyz, and
// nothing else. Whatever shows devices, balances or the process's memory
// is on the operator API.
func (g *Gateway) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(g.metrics.Registry, promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := g.notReady(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
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
	if g.ingest.full.Load() {
		why = append(why, "storage near its bound")
	}
	return strings.Join(why, "; ")
}
