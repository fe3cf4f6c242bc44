package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/jsrecv"
	"github.com/farthing-iot/farthing/provider/mqttrecv"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

// trustFiles collects repeated --trust FILE flags.
type trustFiles []string

func (t *trustFiles) String() string     { return fmt.Sprint(*t) }
func (t *trustFiles) Set(s string) error { *t = append(*t, s); return nil }

// receiveMaxConns caps the receiver's HTTP connections.
const receiveMaxConns = 256

// runReceive is the provider's receiver.
func runReceive(e *env, args []string) error {
	if len(args) > 0 && args[0] == "report" {
		return receiveReport(e, args[1:])
	}
	f, err := receiveFlags(args)
	if err != nil {
		return err
	}
	var policies map[string]provider.PayoutPolicy
	if f.payouts != "" {
		if policies, err = provider.ReadPayoutPolicies(f.payouts); err != nil {
			return err
		}
	}
	keys, err := trustedKeys(f.trust)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := openReceiver(ctx, f, keys)
	if err != nil {
		return err
	}
	defer r.Close()
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	closeFleet, err := f.fleet.start(r)
	if err != nil {
		return err
	}
	defer closeFleet()
	errc := make(chan error, 2)
	var feeds sync.WaitGroup
	defer feeds.Wait()
	fctx, stopFeeds := context.WithCancel(ctx)
	defer stopFeeds()
	if err := serveReceiver(fctx, e, r, f, log, &feeds, errc); err != nil {
		return err
	}
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			payOut(e, r, policies)
			return printTotals(e, r, true)
		case err := <-errc:
			if err != nil && err != http.ErrServerClosed {
				return err
			}
		case <-t.C:
			payOut(e, r, policies)
			printTotals(e, r, true)
		}
	}
}

// receiveOptions are farthing receive's flags.
type receiveOptions struct {
	data, httpAddr, mqttURL, topic, user, password, clientID string
	jsURL, stream, durable, payouts, db, metricsAddr         string
	deviceKeys, readTokenFile, readHTTP                      string
	fleet                                                    fleetOptions
	readToken                                                [sha256.Size]byte // of the token in readTokenFile
	trust                                                    trustFiles
	every                                                    time.Duration
	maxConns                                                 int
}

// receiveFlags reads farthing receive's flags: one feed (--http, --mqtt
// or --jetstream) and at least one --trust are required.
func receiveFlags(args []string) (*receiveOptions, error) {
	var f receiveOptions
	fs := newFlags("receive")
	fs.StringVar(&f.data, "data", "farthing-receiver", "directory for the receiver's state")
	fs.Var(&f.trust, "trust", "a gateway's public key file, as [GATEWAY-ID=]FILE: the key speaks for that gateway id\n(without one, for the first id it is seen with); repeatable")
	fs.StringVar(&f.httpAddr, "http", "", "serve POST /aggregates on this address (and GET /totals, with --read-token-file)")
	fs.StringVar(&f.readTokenFile, "read-token-file", "", "a file (mode 0600) holding the read token: GET /totals on --http needs\n\"Authorization: Bearer TOKEN\"; without it, GET /totals there is refused (401)")
	fs.StringVar(&f.readHTTP, "read-http", "", "serve GET /totals, with no credential, on a listener of its own (loopback, a management network)")
	fs.StringVar(&f.mqttURL, "mqtt", "", "subscribe to aggregates on this MQTT broker")
	fs.StringVar(&f.topic, "topic", protocol.Topics{}.AggregateFilter(), "MQTT topic filter")
	fs.StringVar(&f.user, "user", "", "MQTT user name")
	fs.StringVar(&f.password, "password", "", "MQTT password")
	fs.StringVar(&f.clientID, "client-id", "farthing-receiver", "MQTT client id (the broker keeps the session under it)")
	fs.StringVar(&f.jsURL, "jetstream", "", "consume aggregates from this NATS server")
	fs.StringVar(&f.stream, "stream", "FARTHING", "JetStream stream")
	fs.StringVar(&f.durable, "durable", "farthing-receiver", "JetStream durable consumer (receivers on one durable share the work)")
	fs.DurationVar(&f.every, "every", 10*time.Second, "print the totals this often")
	fs.StringVar(&f.payouts, "payouts", "", "the payouts file: pay out on each provider's schedule (checked at every --every tick)")
	fs.StringVar(&f.db, "db", "", "keep the books in PostgreSQL (postgres://USER@HOST:PORT/DB) instead of DATA/receiver.db;\nseveral receivers may share one database")
	fs.IntVar(&f.maxConns, "db-max-conns", 8, "with --db: the most database connections")
	fs.StringVar(&f.metricsAddr, "metrics", "", "serve /metrics and /healthz on this address")
	fs.StringVar(&f.deviceKeys, "device-keys", "", "payword devices' Ed25519 public keys, a line \"DEVICE-ID HEX-KEY\" each (farthing device list --public-keys):\na chain progress record of such a device is proven only if the device signed its commitment")
	f.fleet.flags(fs)
	if err := parse(fs, args, 0); err != nil {
		return nil, err
	}
	if err := f.fleet.check(); err != nil {
		return nil, err
	}
	modes := 0
	for _, m := range []string{f.httpAddr, f.mqttURL, f.jsURL} {
		if m != "" {
			modes++
		}
	}
	if modes != 1 {
		return nil, usageError{"give one of --http, --mqtt or --jetstream"}
	}
	if len(f.trust) == 0 {
		return nil, usageError{"--trust is required: the gateways' public keys"}
	}
	if f.readTokenFile != "" {
		t, err := operator.LoadToken(f.readTokenFile)
		if err != nil {
			return nil, usageError{"--read-token-file: " + err.Error()}
		}
		f.readToken = t
	}
	return &f, nil
}

// trustedKeys reads the gateways' keys, each as [GATEWAY-ID=]FILE.
func trustedKeys(trust trustFiles) ([]provider.Trust, error) {
	var keys []provider.Trust
	for _, arg := range trust {
		gw, f, ok := strings.Cut(arg, "=")
		if !ok {
			gw, f = "", arg
		}
		k, err := keyfile.Load(f)
		if err != nil {
			return nil, err
		}
		switch {
		case k.Public != nil:
			keys = append(keys, provider.Trust{Key: k.Public, Gateway: gw})
		case k.Private != nil:
			keys = append(keys, provider.Trust{Key: k.Private.Public().(ed25519.PublicKey), Gateway: gw})
		default:
			return nil, fmt.Errorf("%s: not an Ed25519 gateway key", f)
		}
	}
	return keys, nil
}

// openReceiver opens the books (PostgreSQL with --db, else a bbolt file
// in --data) and gives the receiver the payword devices' keys.
func openReceiver(ctx context.Context, f *receiveOptions, keys []provider.Trust) (*provider.Receiver, error) {
	var r *provider.Receiver
	var err error
	if f.db != "" {
		r, err = pgbooks.Open(ctx, f.db, keys, pgbooks.Options{MaxConns: int32(f.maxConns)})
	} else if err = os.MkdirAll(f.data, 0o700); err == nil {
		r, err = provider.Open(filepath.Join(f.data, "receiver.db"), keys)
	}
	if err != nil || f.deviceKeys == "" {
		return r, err
	}
	dk, err := provider.ReadDeviceKeys(f.deviceKeys)
	if err == nil {
		err = r.TrustDevices(dk)
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// serveReceiver starts the metrics listener, if asked for, and the feed:
// the HTTP listener, the MQTT subscription or the JetStream consumer.
// Each runs on a goroutine of feeds until ctx ends, and sends its end to
// errc.
func serveReceiver(ctx context.Context, e *env, r *provider.Receiver, f *receiveOptions, log *slog.Logger, feeds *sync.WaitGroup, errc chan<- error) error {
	serve := func(l net.Listener, srv *http.Server) {
		feeds.Add(2)
		go func() { defer feeds.Done(); errc <- srv.Serve(l) }()
		go func() { defer feeds.Done(); <-ctx.Done(); srv.Close() }()
	}
	if f.metricsAddr != "" {
		l, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return err
		}
		serve(netutil.LimitListener(l, 16), &http.Server{Handler: receiverOps(r), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second})
	}
	if err := f.fleet.serve(ctx, e, r, log, serve, feeds); err != nil {
		return err
	}
	if f.readHTTP != "" {
		l, err := net.Listen("tcp", f.readHTTP)
		if err != nil {
			return err
		}
		serve(netutil.LimitListener(l, 16), &http.Server{Handler: r.ReadHandler(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second})
		fmt.Fprintf(e.stderr, "the books on http://%s/totals\n", l.Addr())
	}
	switch {
	case f.httpAddr != "":
		l, err := net.Listen("tcp", f.httpAddr)
		if err != nil {
			return err
		}
		// Gateways post one small aggregate per request; a cap and deadlines
		// keep one slow or greedy client from holding the door.
		serve(netutil.LimitListener(l, receiveMaxConns), &http.Server{Handler: r.Handler(log, provider.ReadAccess{Token: f.readToken}), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)})
		fmt.Fprintf(e.stderr, "receiving on http://%s/aggregates\n", l.Addr())
	case f.mqttURL != "":
		feeds.Add(1)
		go func() {
			defer feeds.Done()
			errc <- mqttrecv.Run(ctx, r, mqttrecv.Config{Broker: f.mqttURL, ClientID: f.clientID, Filter: f.topic, Username: f.user, Password: f.password, Log: log})
		}()
	default:
		feeds.Add(1)
		go func() {
			defer feeds.Done()
			errc <- jsrecv.Run(ctx, r, jsrecv.Config{URL: f.jsURL, Stream: f.stream, Durable: f.durable, Log: log})
		}()
	}
	return nil
}

// receiverOps serves the receiver's /metrics (its counters) and /healthz
// (503 while its books do not answer, a database that is down).
func receiverOps(r *provider.Receiver) http.Handler {
	reg := prometheus.NewRegistry()
	for _, c := range []struct {
		name, help string
		v          func(provider.Stats) uint64
	}{
		{"accepted", "Records booked.", func(s provider.Stats) uint64 { return s.Accepted }},
		{"duplicates", "Records that were booked already.", func(s provider.Stats) uint64 { return s.Duplicates }},
		{"conflicts", "Records held: their stream and seq are booked with other bytes.", func(s provider.Stats) uint64 { return s.Conflicts }},
		{"wrong_gateway", "Records held: another gateway id than their key's.", func(s provider.Stats) uint64 { return s.WrongGateway }},
		{"stream_resets", "Streams that began a new epoch of a known key.", func(s provider.Stats) uint64 { return s.Resets }},
		{"refused", "Records refused (untrusted, invalid).", func(s provider.Stats) uint64 { return s.Refused }},
		{"restores", "Restore records booked: a gateway restored from a backup.", func(s provider.Stats) uint64 { return s.Restores }},
		{"superseded_by_restore", "Aggregates and credits a restore took out of the payable books (see farthing receive report).",
			func(s provider.Stats) uint64 { return s.Superseded }},
		{"paywords_proven", "Chain progress records whose paywords the receiver proved.", func(s provider.Stats) uint64 { return s.Paywords }},
		{"paywords_unproven", "Chain progress records held: their paywords do not prove their claim.", func(s provider.Stats) uint64 { return s.UnprovenPaywords }},
		{"paywords_unattested", "Proven chain progress records whose commitment no device key checked.", func(s provider.Stats) uint64 { return s.UnattestedPaywords }},
		{"reads_refused", "Reads of the books over HTTP (GET /totals) refused for want of the read token.", func(s provider.Stats) uint64 { return s.ReadsRefused }},
		{"payouts", "Payouts made (farthing receive --payouts).", func(s provider.Stats) uint64 { return s.Payouts }},
		{"command_acks", "Gateways' answers to control commands booked.", func(s provider.Stats) uint64 { return s.CommandAcks }},
		{"command_refusals", "Gateways' answers that refused a command (farthing fleet status says why).", func(s provider.Stats) uint64 { return s.CommandRefusals }},
		{"local_changes", "Changes a gateway's operator made by hand (a tariff file edited there), as the gateway reported them.",
			func(s provider.Stats) uint64 { return s.LocalChanges }},
		{"payout_failures", "Runs of payouts that stopped on an error (the books did not answer, a policy they refuse).", func(s provider.Stats) uint64 { return s.PayoutFailures }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "farthing_receiver_" + c.name + "_total", Help: c.help},
			func() float64 { return float64(c.v(r.Stats())) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "farthing_receiver_payword_claims_open",
		Help: "Aggregates whose payword quantity the chain progress records do not (yet) prove to the unit (see farthing receive report); -1 while the books do not answer."},
		func() float64 {
			n, err := r.OpenPaywordClaims()
			if err != nil {
				return -1
			}
			return float64(n)
		}))
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
		defer cancel()
		if err := r.Ping(ctx); err != nil {
			http.Error(w, "books unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return m
}

// receiveReport is `farthing receive report`: the totals, streams, held
// aggregates and the wallets' reconciliation of a stopped receiver's file.
func receiveReport(e *env, args []string) error {
	fs := newFlags("receive report")
	data := fs.String("data", "farthing-receiver", "the receiver's data directory")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	path := filepath.Join(*data, "receiver.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no receiver file: %w", err)
	}
	r, err := provider.Open(path, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	return printTotals(e, r, false)
}

// payOut runs the payouts the policies call for and prints them.
func payOut(e *env, r *provider.Receiver, policies map[string]provider.PayoutPolicy) {
	if policies == nil {
		return
	}
	made, err := r.RunDuePayouts(context.Background(), policies, time.Now())
	if err != nil {
		fmt.Fprintf(e.stderr, "payouts: %v\n", err)
	}
	for _, p := range made {
		cur := metering.Currency(p.Currency)
		var parts []string
		for _, s := range p.Payees {
			parts = append(parts, fmt.Sprintf("%s %s", s.ID, metering.Money{Nanos: s.Amount, Currency: cur}))
		}
		fmt.Fprintf(e.stdout, "PAYOUT %s #%d: %s to %s, platform fee %s, carried %s (%d aggregates)\n", p.Provider, p.Number,
			metering.Money{Nanos: p.Gross, Currency: cur}, strings.Join(parts, ", "), metering.Money{Nanos: p.Fee, Currency: cur},
			metering.Money{Nanos: p.CarryOut, Currency: cur}, p.Count)
	}
}
