package gateway

import (
	"context"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/farthing-iot/farthing/gateway/ingest"

	"github.com/farthing-iot/farthing/gateway/coaps"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/mqtt"
	"github.com/farthing-iot/farthing/gateway/upstream/httpsink"
	"github.com/farthing-iot/farthing/gateway/upstream/jetstreamsink"
	"github.com/farthing-iot/farthing/gateway/upstream/mqttsink"
	"github.com/farthing-iot/farthing/protocol"
)

// Run serves until ctx ends, then shuts down gracefully: transports stop
// taking tickets, tickets in flight finish their commits, the store
// closes.
func (g *Gateway) Run(ctx context.Context) (err error) {
	tctx, stopTransports := context.WithCancel(context.Background())
	var wg sync.WaitGroup // the transports, forwarders and housekeeping
	var hs httpServers    // the metrics and operator listeners
	// One teardown for every exit: transports stop, goroutines end, the
	// servers close, the store closes last.
	defer func() {
		stopTransports()
		wg.Wait()
		hs.close()
		if cerr := g.store.Close(); err == nil {
			err = cerr
		}
		g.closeGatewayKey()
		g.log.Info("stopped")
	}()
	errc := make(chan error, 4)
	if err := g.startMQTT(ctx, tctx, &wg, errc); err != nil {
		return err
	}
	if err := g.startDTLS(tctx, &wg); err != nil {
		return err
	}
	if err := g.startMetrics(&hs); err != nil {
		return err
	}
	if g.console != nil {
		wg.Add(1)
		go func() { defer wg.Done(); g.console.Sample(tctx) }()
	}
	if err := g.startOperator(&hs); err != nil {
		return err
	}
	if err := g.startForwarders(tctx, &wg); err != nil {
		return err
	}
	g.startControl(tctx, &wg)
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

// startMQTT starts the embedded broker, or the client of an external one
// and waits for its subscription (ready means tickets can arrive).
func (g *Gateway) startMQTT(ctx, tctx context.Context, wg *sync.WaitGroup, errc chan error) error {
	topics := mqtt.Topics{Prefix: g.cfg.MQTT.TopicPrefix}
	event := func(e string) { g.metrics.Transport.WithLabelValues("mqtt", e).Inc() }
	switch g.cfg.MQTT.Mode {
	case "embedded":
		b, err := mqtt.NewBroker(mqtt.BrokerConfig{Listen: g.cfg.MQTT.Listen, Topics: topics, Handle: g.ingest.Handle,
			Authenticate: g.authenticate, Log: g.log, Event: event, SessionExpiry: g.cfg.MQTT.SessionExpiry,
			ReceiptQoS: byte(g.cfg.MQTT.ReceiptQoS), Door: g.cfg.MQTT.DoorConfig,
			Vouchers: true,
			OnTakeover: func(dev, oldRemote, newRemote string) {
				g.ingest.NoteCloneSign(dev, ingest.SignTakeover, "session of "+oldRemote+" taken over from "+newRemote)
			}})
		if err != nil {
			return err
		}
		g.listeners = append(g.listeners, listenerCheck{"mqtt", b.Serving})
		g.addSessions("mqtt", sessionsOf{close: func(dev string) int {
			if b.Disconnect(dev) {
				return 1
			}
			return 0
		}, online: b.Online, connected: b.Connected})
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
				Username: g.cfg.MQTT.Username, Password: g.cfg.MQTT.Password, Topics: topics, Handle: g.ingest.Handle, Log: g.log, Event: event, ReceiptQoS: byte(g.cfg.MQTT.ReceiptQoS),
				Subscribed: func() { up.Store(true); once.Do(func() { close(subscribed) }) },
				Vouchers:   true,
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
	cc := coaps.Config{Listen: c.Listen, Handle: g.ingest.Handle, PSK: g.dtlsPSK, Log: g.log,
		Certificate: cert, ClientCAs: cas, Limits: c.Limits, Vouchers: true,
		Event: func(e string) { g.metrics.Transport.WithLabelValues("coaps", e).Inc() },
		SecondSession: func(dev, oldRemote, newRemote string) {
			g.ingest.NoteCloneSign(dev, ingest.SignDTLS, "session from "+newRemote+" while one from "+oldRemote+" is open")
		}}
	if c.CRLFile != "" {
		if g.crl, err = newCRLWatch(c.CRLFile, c.ClientCAFile, g.log); err != nil {
			return err
		}
		cc.Revoked = g.crl.revoked
	}
	cs, err := coaps.Listen(cc)
	if err != nil {
		return err
	}
	g.addSessions("coaps", sessionsOf{close: cs.Disconnect, online: cs.Online, connected: cs.Connected})
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
	f := newForwarder(g.ingest.Books(), g.cfg.GatewayID, names, g.log,
		func(e string) { g.metrics.Transport.WithLabelValues("upstream", e).Inc() })
	g.forwarder = f
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
			up = httpsink.New(httpsink.Config{URL: u.URL, Header: h, OnDate: g.clock.upstreamDate})
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

// memoryRelease is how often housekeeping looks whether to return unused
// memory.
const memoryRelease = time.Minute

// housekeeping closes windows whose end passed, watches the store's size
// and the disk, reloads the configuration files when they change, and
// after every memoryRelease in which no ticket came gives memory the
// gateway no longer uses back to the system.
func (g *Gateway) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	if g.audit != nil {
		defer g.audit.close()
	}
	released, seen := time.Now(), g.ingest.Received()
	g.watchClock(g.cfg.Clock()) // at start: a clock behind the books is said at once
	g.housekept.Store(time.Now().UnixNano())
	for {
		select {
		case <-ctx.Done():
			return
		case tick := <-t.C:
			// The windows, chains, audit and pruning follow the wall
			// clock, not the process: after a forward jump (NTP syncing a
			// box with no RTC) every window that has ended seals at once;
			// after a backward one nothing sealed is sealed again or
			// reopened (a window's floor only moves forward).
			now := g.cfg.Clock()
			g.watchClock(now)
			g.gc.tune()
			g.closeSuspended()
			if tick.Sub(released) >= memoryRelease {
				// Only when idle: returning every free page holds the heap's
				// lock, which stalled tickets for hundreds of milliseconds
				// under load (one p99 slice in three of a 20 s bench run);
				// a busy gateway's collections shrink its connections'
				// stacks anyway, and the runtime returns memory gradually.
				// An idle one gives back at once what a burst left.
				if n := g.ingest.Received(); n == seen {
					debug.FreeOSMemory()
				} else {
					seen = n
				}
				released = tick
			}
			if err := g.CloseWindows(ctx, now); err != nil && ctx.Err() == nil {
				g.log.Warn("closing windows failed", "error", err)
			}
			if err := g.closeGrants(ctx, now); err != nil && ctx.Err() == nil {
				g.log.Warn("closing grants failed", "error", err)
			}
			if _, err := g.ingest.Books().ReportChains(ctx, &g.ingest.Snapshot().Terms, now); err != nil && ctx.Err() == nil {
				g.log.Warn("reporting payword chains failed", "error", err)
			}
			g.watchDisk()
			g.watchFiles()
			var names []string
			for _, u := range g.cfg.Upstreams {
				names = append(names, u.Name)
			}
			if err := g.shipAudit(ctx, now); err != nil && ctx.Err() == nil {
				g.log.Error("audit sink failed: nothing is pruned until it takes the audit data", "error", err)
			}
			if _, err := g.ingest.Books().Prune(ctx, ledger.PruneOptions{Upstreams: names, Retention: g.cfg.Limits.AuditRetention,
				Audit: g.audit != nil, Now: now}); err != nil && ctx.Err() == nil {
				g.log.Warn("pruning failed", "error", err)
			}
			g.housekept.Store(time.Now().UnixNano())
		}
	}
}

// SinceHousekeeping is how long ago housekeeping last finished a round
// (windows closed, disk watched, pruning done): the daemon feeds its
// service manager's watchdog only while this stays short. Before Run
// starts housekeeping it is the time since the process started.
func (g *Gateway) SinceHousekeeping() time.Duration {
	n := g.housekept.Load()
	if n == 0 {
		return time.Since(processStart)
	}
	return time.Since(time.Unix(0, n))
}

// processStart is when the gateway package was initialised.
var processStart = time.Now()

func (g *Gateway) watchDisk() {
	st := g.store.Stats()
	use := g.store.Usage()
	g.metrics.StoreBytes.Set(float64(st.FileBytes))
	g.metrics.StoreInUse.Set(float64(use.InUse()))
	g.metrics.OldestSealed.Set(g.ingest.Books().OldestUnforwarded(time.Now()).Seconds())
	full := st.FileBytes > g.cfg.Limits.MaxStoreBytes
	var fs syscall.Statfs_t
	if err := syscall.Statfs(g.cfg.DataDir, &fs); err == nil {
		free := int64(fs.Bavail) * int64(fs.Bsize)
		g.metrics.DiskFree.Set(float64(free))
		full = full || free < g.minFree
	}
	switch warn := st.FileBytes > g.cfg.Limits.WarnStoreBytes; {
	case warn && !g.warned:
		g.log.Warn("state file above its warning level: check that the upstreams confirm (pruning needs them), or compact it",
			"state_bytes", st.FileBytes, "in_use_bytes", use.InUse(), "warn_store_bytes", g.cfg.Limits.WarnStoreBytes,
			"max_store_bytes", g.cfg.Limits.MaxStoreBytes)
		g.warned = true
		g.metrics.StoreWarning.Set(1)
	case !warn && g.warned:
		g.log.Info("state file back under its warning level", "state_bytes", st.FileBytes)
		g.warned = false
		g.metrics.StoreWarning.Set(0)
	}
	refused := g.ingest.FullRefused()
	switch was := g.ingest.Full(); {
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
	if next := g.nextTariff.Load(); next != 0 && g.cfg.Clock().UnixMilli() >= next {
		changed = true // a tariff version took effect: grants and rules follow it
	}
	if changed {
		g.Reload()
		g.mu.Lock()
		g.mtimes = mt // do not retry a broken file every second
		g.mu.Unlock()
	}
}

// closeGrants gives back what grants due at now reserve (expired, or
// idle past their timeout), and sets the grant gauges.
func (g *Gateway) closeGrants(ctx context.Context, now time.Time) error {
	books := g.ingest.Books()
	open, reserved, due, err := books.GrantTotals(now.UnixMilli())
	g.metrics.GrantsOpen.Set(float64(open))
	g.metrics.Reserved.Set(float64(reserved))
	if err != nil || due == 0 {
		return err // nothing to write: no transaction
	}
	n, err := books.CloseGrants(ctx, &g.ingest.Snapshot().Terms, now.UnixMilli())
	if n > 0 {
		g.log.Info("grants ended by their expiry or idle timeout: what they reserved is available again", "grants", n)
	}
	return err
}

// CloseWindows seals every open window whose end is at or before now,
// with the terms in force (housekeeping does this every tick).
// Late usage whose fold is due seals with them, as one correction per
// window it touched: logged at WARN with the oldest lateness, and counted.
func (g *Gateway) CloseWindows(ctx context.Context, now time.Time) error {
	terms := &g.ingest.Snapshot().Terms
	if err := g.ingest.Books().CloseWindows(ctx, terms, now); err != nil {
		return err
	}
	rep, err := g.ingest.Books().SealLate(ctx, terms, now)
	if err != nil || rep.Corrections == 0 {
		return err
	}
	g.metrics.LateTickets.Add(float64(rep.Tickets))
	g.log.Warn("late usage folded into corrections of sealed windows", "corrections", rep.Corrections, "tickets", rep.Tickets,
		"amount_nanos", rep.Amount, "oldest_late", rep.Oldest.Round(time.Second).String())
	return nil
}
