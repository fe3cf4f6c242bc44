package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/farthing-iot/farthing/gateway/pkcs11key"
	"github.com/farthing-iot/farthing/internal/atomicfile"

	"github.com/farthing-iot/farthing/gateway/console"
	"github.com/farthing-iot/farthing/gateway/registry"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/store"
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
	ingest  *ingest.Ingest
	metrics *Metrics
	gc      *gcTuner
	signer  protocol.Signer // the gateway's key: from its key file or a PKCS#11 token
	pub     ed25519.PublicKey
	// closeKey releases the key (a token's session); nil for a key file.
	closeKey func() error

	mu      sync.Mutex // guards mtimes, refused and sessions
	mtimes  [2]time.Time
	refused []registry.Refusal // registry entries not loaded
	clock   clockWatch         // what the gateway makes of its own clock
	// sessions are the transports that hold device sessions (the embedded
	// broker and the DTLS listener, once they run): a device revoked,
	// disabled, removed or suspended loses its sessions through them, and
	// the console asks them who is online.
	sessions map[string]sessionsOf
	toClose  []string    // suspended devices whose sessions housekeeping closes
	crl      *crlWatch   // the DTLS client certificates' revocation list, if any
	audit    *auditFiles // the audit sink; nil when off. Housekeeping owns it.
	control  *control    // the control channel; nil when off
	// nextTariff is when the next tariff version takes effect (Unix ms; 0:
	// none pending): housekeeping takes a new snapshot then.
	nextTariff atomic.Int64

	ready     chan struct{} // closed once the transports listen
	httpLis   net.Listener
	coapAddr  string
	listeners []listenerCheck  // set before ready is closed
	forwarder *forwarder       // set before ready is closed
	console   *console.Console // the web console; nil when off
	housekept atomic.Int64     // Unix ns of housekeeping's last round
	// operatorAddr is the operator API's TCP address once ready ("" if off).
	operatorAddr string
	// minFree is limits.min_free_bytes as worked out at start-up.
	minFree int64
	// While the store is full (housekeeping's goroutine only): since when,
	// the refusal count when it filled, and when it was last logged.
	fullSince, fullLogged time.Time
	warned                bool // the state file is above limits.warn_store_bytes (logged once)
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
	if err := g.openKey(); err != nil {
		return nil, err
	}
	opened := false
	defer func() {
		if !opened { // a gateway that did not open lets go of its key's token
			g.closeGatewayKey()
		}
	}()
	issuers, err := ingest.LoadIssuers(cfg.VoucherIssuers)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	g.minFree = g.minFreeFloor()
	kid := protocol.KeyIDOf(protocol.AlgEdDSA, g.pub)
	cfg.setKeyDefaults(kid)
	if err := g.checkFiles(); err != nil {
		return nil, err
	}
	books, snap, err := g.openState(kid)
	if err != nil {
		return nil, err
	}
	g.noteRefused(snap.Registry)
	g.clock.m = g.metrics.Clock
	if newest, device, err := books.NewestTimes(); err == nil {
		g.clock.newest, g.clock.device = newest, device
	}
	g.ingest, err = ingest.New(ingest.Config{Books: books, Snapshot: snap, MaxClockSkew: cfg.Limits.MaxClockSkew, Now: cfg.Clock,
		RetryAfter: cfg.Limits.RetryAfter, Fraud: cfg.Fraud, Issuers: issuers, Metrics: g.metrics.Metrics, Log: log,
		OnSuspend: func(device string) {
			// Closed by housekeeping within a second, after the receipt of
			// the message that led to the suspension has gone out.
			g.mu.Lock()
			g.toClose = append(g.toClose, device)
			g.mu.Unlock()
		}})
	if err != nil {
		g.store.Close()
		return nil, err
	}
	if cfg.Audit.Sink == "files" {
		g.audit = &auditFiles{dir: cfg.Audit.Dir, rotate: cfg.Audit.Rotate}
	} else {
		log.Warn("audit sink off: raw tickets and Merkle leaves are dropped with the rest after limits.audit_retention")
	}
	log.Info("aggregate stream", "gateway", cfg.GatewayID, "stream", books.Stream().String())
	opened = true
	return g, nil
}

// openState opens the state file and its books, and reads the snapshot
// the gateway serves by (the files with what the books hold beside them);
// on an error the store is closed again.
func (g *Gateway) openState(kid [protocol.KeyIDLen]byte) (*ledger.Books, *ingest.Snapshot, error) {
	if err := g.openStore(); err != nil {
		return nil, nil, err
	}
	books, err := g.openBooks(kid)
	var snap *ingest.Snapshot
	if err == nil {
		snap, err = g.loadSnapshot(books)
	}
	if err == nil {
		err = g.checkAccounts(books, snap)
	}
	if err != nil {
		g.store.Close()
		return nil, nil, err
	}
	return books, snap, nil
}

// checkFiles reads the control channel's keys and checks the tariff file
// before the state file is opened.
func (g *Gateway) checkFiles() error {
	c := g.cfg.Control
	if len(c.Trust) > 0 || c.DeviceRoot != "" {
		var err error
		if g.control, err = newControl(c); err != nil {
			return err
		}
	}
	_, _, err := LoadTerms(g.cfg)
	return err
}

// openKey opens the gateway's key: in its PKCS#11 token (key_pkcs11),
// whose public key it writes beside the key file for receivers to trust,
// or from its key file.
func (g *Gateway) openKey() error {
	cfg := g.cfg
	if cfg.KeyPKCS11 == nil {
		key, err := loadGatewayKey(cfg.KeyFile, g.log)
		if err != nil {
			return err
		}
		s, err := protocol.NewEd25519Signer(key)
		g.signer, g.pub = s, key.Public().(ed25519.PublicKey)
		return err
	}
	s, err := pkcs11key.Open(*cfg.KeyPKCS11)
	if err != nil {
		return fmt.Errorf("%w: gateway key: %v", ErrConfig, err)
	}
	g.signer, g.pub, g.closeKey = s, s.Public(), s.Close
	pub, err := (&keyfile.Key{Public: s.Public()}).EncodePublic()
	if err == nil {
		err = atomicfile.Write(cfg.KeyFile+".pub", pub, 0o644)
	}
	if err != nil {
		s.Close()
		return fmt.Errorf("gateway public key: %w", err)
	}
	g.log.Info("the gateway key is in a PKCS#11 token", "module", cfg.KeyPKCS11.Module, "token", cfg.KeyPKCS11.Token,
		"key", cfg.KeyPKCS11.Key, "public", cfg.KeyFile+".pub")
	return nil
}

// closeGatewayKey releases the key's token session, if it has one.
func (g *Gateway) closeGatewayKey() {
	if g.closeKey != nil {
		g.closeKey()
	}
}

// loadGatewayKey reads the gateway's Ed25519 key, making it (0600, with
// its public key beside it) on first start.
func loadGatewayKey(path string, log *slog.Logger) (ed25519.PrivateKey, error) {
	k, err := keyfile.Load(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if k, err = keyfile.GenerateEd25519(); err != nil {
			return nil, err
		}
		pem, err := k.EncodePrivate()
		if err != nil {
			return nil, fmt.Errorf("gateway key: %w", err)
		}
		if err := keyfile.WriteNew(path, pem, 0o600); err != nil {
			return nil, fmt.Errorf("gateway key: %w", err)
		}
		pub, err := k.EncodePublic()
		if err != nil {
			return nil, fmt.Errorf("gateway public key: %w", err)
		}
		if err := keyfile.WriteNew(path+".pub", pub, 0o644); err != nil {
			return nil, fmt.Errorf("gateway public key: %w", err)
		}
		log.Info("generated the gateway key", "private", path, "public", path+".pub")
	case err != nil:
		return nil, fmt.Errorf("gateway key: %w", err)
	case k.Private == nil:
		return nil, fmt.Errorf("gateway key %s: want an Ed25519 private key, found a %s", path, k.Kind())
	}
	return k.Private, nil
}

// openStore opens the state file with the commit settings; in verify
// mode every checkpoint is followed by a reconciliation of the books.
func (g *Gateway) openStore() error {
	cfg := g.cfg
	verify := ledger.VerifyMode()
	if verify {
		g.log.Warn("verify mode: the books are reconciled after every checkpoint (" + ledger.VerifyEnv + "=1); not for production")
	}
	linger, gap := cfg.Commit.storeWait()
	st, err := store.Open(filepath.Join(cfg.DataDir, StateFile), store.Options{MaxBatch: cfg.Commit.MaxBatch, Linger: linger, Gap: gap,
		CheckpointEvery: cfg.Commit.Checkpoint, JournalBytes: cfg.Commit.JournalBytes,
		OnCommit: func(ops int, took time.Duration) {
			g.metrics.BatchSize.Observe(float64(ops))
			g.metrics.CommitTx.Observe(took.Seconds())
		},
		OnCheckpoint: func() {
			if verify {
				g.verifyBooks()
			}
		}})
	if err != nil {
		return err
	}
	g.store = st
	g.metrics.Storage.watch(st)
	if r := st.Recovery(); r.Batches > 0 || r.Torn {
		g.log.Warn("the state file's journal was replayed: the gateway had stopped without a checkpoint (killed, or a power cut)",
			"batches", r.Batches, "torn_record_ignored", r.Torn)
	}
	return nil
}

// openBooks initialises (or migrates) the books in the store and opens
// the aggregate stream.
func (g *Gateway) openBooks(kid [protocol.KeyIDLen]byte) (*ledger.Books, error) {
	st := g.store
	signer := g.signer
	if err := ledger.Init(context.Background(), st); err != nil {
		return nil, err
	}
	stream, base, err := ledger.OpenStream(context.Background(), st, kid[:])
	if err != nil {
		return nil, fmt.Errorf("stream epoch: %w", err)
	}
	books := ledger.New(st, ledger.Config{Signer: signer, Stream: stream, SeqBase: base, Now: g.cfg.Clock,
		OnSeal: func(reason string) { g.metrics.Sealed.WithLabelValues(reason).Inc() },
		OnGrant: func(event string, amount metering.Nanos) {
			g.metrics.Grants.WithLabelValues(event).Inc()
			g.metrics.GrantNanos.WithLabelValues(event).Add(float64(amount))
		}})
	restore, err := books.AnnounceRestore(context.Background(), g.cfg.GatewayID)
	if err != nil {
		return nil, err
	}
	if restore != nil {
		old, _ := protocol.StreamOf(kid[:], restore.OldEpoch)
		g.log.Warn("restored state file: the first record of the new stream tells the receivers that the backup's stream is superseded after its last seq; they take what it numbered later out of the payable books",
			"stream", stream.String(), "superseded_stream", old.String(), "after_seq", restore.OldLastSeq)
	}
	return books, nil
}

// checkAccounts checks the configured accounts against the books.
func (g *Gateway) checkAccounts(books *ledger.Books, snap *ingest.Snapshot) error {
	ignored, err := books.CheckAccounts(&snap.Terms)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	for _, id := range ignored {
		g.log.Info("the configured balance of an account with state is an opening balance only: ignored (use farthing account topup)", "account", id)
	}
	return nil
}

// verifyBooks reconciles the books after a commit, in verify mode, before
// the commit's receipts go out; books that do not add up stop the daemon.
func (g *Gateway) verifyBooks() {
	if err := ledger.New(g.store, ledger.Config{}).Reconcile(); err != nil {
		g.log.Error("verify mode: the books do not reconcile after a checkpoint", "error", err)
		panic(err)
	}
}

// Ingest returns the pipeline, for transports added from outside.
func (g *Gateway) Ingest() *ingest.Ingest { return g.ingest }

// Books returns the gateway's books: every read of the state file is a
// method of it.
func (g *Gateway) Books() *ledger.Books { return g.ingest.Books() }

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

// LoadTerms reads what cfg's devices are checked against — its accounts,
// providers and tariff file — into a snapshot without a registry (a
// registry.Known), and the tariff file's modification time. A missing
// tariff file is an empty one.
func LoadTerms(cfg *Config) (*ingest.Snapshot, time.Time, error) {
	snap := &ingest.Snapshot{Terms: ledger.Terms{GatewayID: cfg.GatewayID, LateFold: cfg.Corrections.Fold, Grants: cfg.Grants.Terms(), Policies: map[string]metering.Policy{},
		Accounts: map[string]metering.Account{}, Caps: map[string]metering.Caps{}, LowBalance: map[string]metering.Nanos{}}}
	for _, a := range cfg.Accounts {
		acct, _ := a.Opening()
		snap.Accounts[a.ID] = acct
		snap.Caps[a.ID], _ = a.Caps() // validated with the configuration
		snap.LowBalance[a.ID], _ = a.LowBalanceLevel()
	}
	for _, p := range cfg.Providers {
		snap.Policies[p.ID], _ = p.Policy()
	}
	b, err := os.ReadFile(cfg.Tariffs)
	if errors.Is(err, os.ErrNotExist) {
		snap.Tariffs = &metering.TariffSet{}
		return snap, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	if snap.Tariffs, err = metering.ParseTariffs(cfg.Tariffs, b); err != nil {
		return nil, time.Time{}, err
	}
	var mt time.Time
	if fi, err := os.Stat(cfg.Tariffs); err == nil {
		mt = fi.ModTime()
	}
	return snap, mt, nil
}

// loadSnapshot reads the tariff and device files and the configuration
// into a snapshot, with what the books hold beside them: the tariff
// versions (the one in force now prices grants and holds the
// plausibility rules; each ticket is priced by the one in force at its
// usage time) and what control commands revoked and provisioned. A
// missing file is empty (every ticket is refused).
func (g *Gateway) loadSnapshot(books *ledger.Books) (*ingest.Snapshot, error) {
	snap, tariffTime, err := LoadTerms(g.cfg)
	if err != nil {
		return nil, err
	}
	if tariffTime.IsZero() {
		g.log.Warn("no tariff file: every ticket is refused until one exists", "path", g.cfg.Tariffs)
	}
	if err := g.tariffVersions(books, snap, !tariffTime.IsZero()); err != nil {
		return nil, err
	}
	mt := [2]time.Time{tariffTime}
	rf, err := registry.ReadFile(g.cfg.Devices)
	if err != nil {
		return nil, err
	}
	if err := g.withControlState(books, rf); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(g.cfg.Devices); err == nil {
		mt[1] = fi.ModTime()
	}
	if snap.Registry, err = registry.Build(g.cfg.Devices, rf, snap); snap.Registry == nil {
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
// keeps its current configuration and returns the error. A bad device
// entry is not an error: it is refused (see noteRefused) and the rest
// load; a device served until now keeps its previous entry. A file none
// of whose entries load is refused whole. Tickets in flight
// finish with the snapshot they started with.
func (g *Gateway) Reload() error {
	snap, err := g.loadSnapshot(g.Books())
	if err != nil {
		g.log.Error("reload refused: keeping the current devices and tariffs", "error", err)
		return err
	}
	refused := snap.Registry.Refused()
	if len(refused) > 0 && snap.Registry.Len() == 0 {
		err := fmt.Errorf("%w (every entry of the file is refused)", refused[0])
		g.log.Error("reload refused: keeping the current devices and tariffs", "error", err)
		return err
	}
	old := g.ingest.Snapshot()
	for _, f := range refused {
		if d := old.Registry.Device(f.ID); d != nil {
			snap.Registry.Keep(d, snap)
		}
	}
	g.noteRefused(snap.Registry)
	g.ingest.Reload(snap)
	g.log.Info("reloaded", "devices", snap.Registry.Len(), "tariffs", len(snap.Tariffs.Tariffs))
	g.closeSessionsOfStopped(old, snap)
	return nil
}

// noteRefused says which registry entries reg left out: each at ERROR
// (the device is refused, the rest serve), in farthing_devices_refused and
// in /readyz's detail.
func (g *Gateway) noteRefused(reg *registry.Registry) {
	refused := reg.Refused()
	for _, f := range refused {
		if f.Kept {
			g.log.Error("device entry refused: the device serves on with its previous entry until the file is fixed",
				"device", f.ID, "where", f.Where, "field", f.Field, "problem", f.Problem)
			continue
		}
		g.log.Error("device entry refused: the device cannot connect or charge until the file is fixed; the other devices are loaded",
			"device", f.ID, "where", f.Where, "field", f.Field, "problem", f.Problem)
	}
	g.metrics.Refused.Set(float64(len(refused)))
	g.mu.Lock()
	g.refused = refused
	g.mu.Unlock()
}

// refusedDetail is /readyz's line on refused registry entries, "" if none.
func (g *Gateway) refusedDetail() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.refused) == 0 {
		return ""
	}
	parts := make([]string, len(g.refused))
	for i, f := range g.refused {
		parts[i] = fmt.Sprintf("%s (%s: %s", f.ID, f.Field, f.Problem)
		if f.Kept {
			parts[i] += "; serving with its previous entry"
		}
		parts[i] += ")"
	}
	return fmt.Sprintf("devices refused: %d: %s", len(g.refused), strings.Join(parts, ", "))
}

// closeSessionsOfStopped closes the open sessions of the devices the
// reload from old to snap revoked, disabled or removed: they could not
// connect again, and must not go on holding a session either.
func (g *Gateway) closeSessionsOfStopped(old, snap *ingest.Snapshot) {
	if old == nil || old.Registry == nil {
		return
	}
	for _, d := range old.Registry.Devices() {
		if !d.Active() {
			continue
		}
		if now := snap.Registry.Device(d.ID); now != nil && now.Active() {
			continue
		}
		g.closeSessions(d.ID, "the device was revoked, disabled or removed")
	}
}

// closeSessions closes device's open sessions on every transport.
func (g *Gateway) closeSessions(device, why string) {
	for transport, d := range g.transportSessions() {
		if n := d.close(device); n > 0 {
			g.metrics.Transport.WithLabelValues(transport, "session_closed").Add(float64(n))
			g.log.Warn("device session closed: "+why, "device", device, "transport", transport, "sessions", n)
		}
	}
}

// closeSuspended closes the sessions of the devices suspended since it
// last ran.
func (g *Gateway) closeSuspended() {
	g.mu.Lock()
	devs := g.toClose
	g.toClose = nil
	g.mu.Unlock()
	for _, d := range devs {
		g.closeSessions(d, "the device was suspended")
	}
}

// sessionsOf is what the gateway asks of a transport about its device
// sessions.
type sessionsOf struct {
	close     func(device string) int // closes the device's sessions, returns how many
	online    func(device string) bool
	connected func() int // devices with a session now
}

// addSessions registers a transport's device sessions.
func (g *Gateway) addSessions(transport string, d sessionsOf) {
	g.mu.Lock()
	defer g.mu.Unlock()
	next := maps.Clone(g.sessions)
	if next == nil {
		next = map[string]sessionsOf{}
	}
	next[transport] = d
	g.sessions = next
}

// transportSessions returns the transports holding device sessions; the map is
// never modified once returned.
func (g *Gateway) transportSessions() map[string]sessionsOf {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions
}

func (g *Gateway) dtlsPSK(identity string) ([]byte, bool) {
	d := g.ingest.Snapshot().Registry.Device(identity)
	if d == nil || !d.Active() || g.ingest.Suspended(d.ID) {
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
	return d != nil && d.Active() && !g.ingest.Suspended(d.ID) && d.CheckMQTTPassword(password)
}
