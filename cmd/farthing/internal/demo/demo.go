// Package demo runs Farthing end to end on one machine: a gateway with its
// embedded broker in a temporary data directory, a few provisioned devices
// with different tariffs and account types, a short simulated load, and a
// reconciliation of the money. It is `farthing demo`.
package demo

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"text/tabwriter"
	"time"

	"github.com/farthing-iot/farthing/cmd/farthing/internal/sim"
	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/provider"
)

// Options shape a demo run.
type Options struct {
	Rate     float64       // tickets/s over all devices; default 600
	Duration time.Duration // default 4s
	Out      io.Writer     // the story; default os.Stdout
	Log      *slog.Logger  // the gateway's log; default discarded
	Dir      string        // data directory; default a new temporary one, removed after
}

// Result is what the demo found.
type Result struct {
	Sim      *sim.Report
	Inspect  *ledger.Report
	Received *provider.Report
	Payouts  []provider.Payout
	Wallets  []provider.Wallet
	Balanced bool
	DataDir  string
	// Session is the charger session under a grant.
	Session chargerSession

	// The sums the reconciliation prints, in nanos.
	received, credited, paid, fees, carried, pending, simCharged metering.Nanos
}

const tariffs = `tariffs:
  - id: evse-dc
    currency: EUR
    unit: Wh
    timezone: Europe/Berlin
    period: month
    tiers:
      - {up_to: 100000, price: 0.39 EUR, per: 1000}
      - {price: 0.34 EUR, per: 1000}
    time_of_use:
      - {name: peak, days: weekdays, from: "17:00", to: "21:00", price: 0.49 EUR, per: 1000}
  - id: plug-home
    currency: EUR
    unit: Wh
    timezone: Europe/Berlin
    period: day
    free: 50
    price: 0.30 EUR
    per: 1000
  - id: plug-ontime
    currency: EUR
    unit: ms
    period: none
    price: 0.000001 EUR
    per: 1000
  - id: data-eu
    currency: EUR
    unit: byte
    period: none
    price: 0.10 EUR
    per: 1000000000
`

// Run runs the demo and writes its story to opts.Out.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts.defaults()
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "farthing-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	out := opts.Out
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg, devs, err := setUp(dir, mqttAddr)
	if err != nil {
		return nil, err
	}
	charger := devs[len(devs)-1] // not in the simulated load: it runs a session under a grant
	devs = devs[:len(devs)-1]
	fmt.Fprintf(out, "Farthing demo\n  data directory %s\n  gateway %s with an embedded MQTT broker on %s\n", dir, cfg.GatewayID, mqttAddr)
	fmt.Fprintf(out, "  %d devices: 2 EV chargers (Ed25519, postpaid fleet), 2 smart plugs (HMAC, prepaid household),\n", len(devs))
	fmt.Fprintf(out, "  a cellular modem (HMAC, data at 0.10 EUR/GB), a kiosk whose prepaid balance is nearly empty,\n")
	fmt.Fprintf(out, "  and a charger (HMAC, a driver's prepaid account) that serves under grants\n")
	// The kiosk's provider sells top-up vouchers, signed with an issuer key
	// the gateway trusts.
	issuer, err := trustIssuer(cfg, dir)
	if err != nil {
		return nil, err
	}
	// The provider's receiver, over HTTP: the gateway forwards every sealed
	// aggregate to it.
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg.Upstreams = []gateway.UpstreamConfig{{Name: "providers", Type: "http", URL: "http://" + rl.Addr().String() + "/aggregates"}}
	cfg.Forward = gateway.ForwardSettings{DrainRate: 2000, BackoffMin: 20 * time.Millisecond, BackoffMax: time.Second}
	g, err := gateway.New(cfg, opts.Log) // makes the gateway's key
	if err != nil {
		rl.Close()
		return nil, err
	}
	recv, stopReceiver, err := serveReceiver(rl, cfg, dir, opts.Log)
	if err != nil {
		return nil, err
	}
	defer stopReceiver()
	fmt.Fprintf(out, "  the providers' receiver on %s, trusting the gateway's key\n", cfg.Upstreams[0].URL)
	var session chargerSession
	rep, err := runGateway(ctx, g, opts, load{broker: "tcp://" + mqttAddr, devs: devs, issuer: issuer, charger: charger, session: &session})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "\n%s", rep)
	res, err := settle(dir, recv, rep, session)
	if err != nil {
		return nil, err
	}
	printReport(out, res)
	return res, nil
}

// defaults fills in what Options leave out.
func (opts *Options) defaults() {
	if opts.Rate <= 0 {
		opts.Rate = 600
	}
	if opts.Duration <= 0 {
		opts.Duration = 4 * time.Second
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// setUp writes the demo gateway's configuration, tariffs and six devices
// in dir and returns the configuration and the devices' simulators.
func setUp(dir, mqttAddr string) (*gateway.Config, []sim.Device, error) {
	cfg, err := gateway.LoadConfigWithDataDir("", dir)
	if err != nil {
		return nil, nil, err
	}
	cfg.GatewayID = "gw-demo"
	cfg.MQTT.Listen = mqttAddr
	cfg.HTTP.Listen = "off"
	cfg.DTLS.Listen = "off"
	cfg.Accounts = []gateway.AccountConfig{
		{ID: "household", Kind: "prepaid", Currency: "EUR", Balance: "50.00"},
		{ID: "fleet", Kind: "postpaid", Currency: "EUR", CreditLimit: "10000"},
		{ID: "kiosk", Kind: "prepaid", Currency: "EUR", Balance: "0.002"},
		{ID: "driver", Kind: "prepaid", Currency: "EUR", Balance: "5.00"},
	}
	cfg.Providers = []gateway.ProviderConfig{
		{ID: "stadtwerk", Window: 2 * time.Second, Threshold: "0.50 EUR"},
		{ID: "telco", Window: 2 * time.Second},
	}
	if err := os.WriteFile(cfg.Tariffs, []byte(tariffs), 0o600); err != nil {
		return nil, nil, err
	}
	type spec struct {
		id, keyType, account, provider string
		tariffs                        map[string]string
	}
	specs := []spec{
		{"evse-1", "ed25519", "fleet", "stadtwerk", map[string]string{"energy_wh": "evse-dc"}},
		{"evse-2", "ed25519", "fleet", "stadtwerk", map[string]string{"energy_wh": "evse-dc"}},
		{"plug-1", "hmac", "household", "stadtwerk", map[string]string{"energy_wh": "plug-home", "on_ms": "plug-ontime"}},
		{"plug-2", "hmac", "household", "stadtwerk", map[string]string{"energy_wh": "plug-home"}},
		{"modem-1", "hmac", "fleet", "telco", map[string]string{"data_bytes": "data-eu"}},
		{"kiosk-1", "hmac", "kiosk", "stadtwerk", map[string]string{"energy_wh": "plug-home"}},
		{"evse-3", "hmac", "driver", "stadtwerk", map[string]string{"energy_wh": "evse-dc"}}, // the charger session: last
	}
	var rf registry.File
	var devs []sim.Device
	for _, s := range specs {
		e, sec, err := registry.NewDevice(s.id, s.keyType, s.account, s.provider, s.tariffs)
		if err != nil {
			return nil, nil, err
		}
		rf.Devices = append(rf.Devices, e)
		devs = append(devs, sim.Device{Entry: e, Secrets: sec})
	}
	if err := registry.WriteFile(cfg.Devices, &rf); err != nil {
		return nil, nil, err
	}
	return cfg, devs, nil
}

// trustIssuer makes the voucher issuer's key and has the gateway trust it.
func trustIssuer(cfg *gateway.Config, dir string) (*keyfile.Key, error) {
	issuer, err := keyfile.GenerateEd25519()
	if err != nil {
		return nil, err
	}
	issuerPub, err := issuer.EncodePublic()
	if err != nil {
		return nil, err
	}
	cfg.VoucherIssuers = []string{filepath.Join(dir, "issuer.pub")}
	return issuer, os.WriteFile(cfg.VoucherIssuers[0], issuerPub, 0o644)
}

// serveReceiver serves the providers' receiver on rl, trusting the
// gateway's key; the function it returns stops it.
func serveReceiver(rl net.Listener, cfg *gateway.Config, dir string, log *slog.Logger) (*provider.Receiver, func(), error) {
	gk, err := keyfile.Load(cfg.KeyFile)
	if err != nil {
		rl.Close()
		return nil, nil, err
	}
	recv, err := provider.Open(filepath.Join(dir, "receiver.db"), provider.Keys(gk.Private.Public().(ed25519.PublicKey)))
	if err != nil {
		rl.Close()
		return nil, nil, err
	}
	rsrv := &http.Server{Handler: recv.Handler(log, provider.ReadAccess{}), ReadHeaderTimeout: 5 * time.Second} // the demo reads its books in process
	served := make(chan struct{})
	go func() { defer close(served); rsrv.Serve(rl) }()
	return recv, func() { rsrv.Close(); <-served; recv.Close() }, nil
}

// load is the demo's simulated load: the devices, the broker they
// publish to, and the issuer of the kiosk's voucher.
type load struct {
	broker  string
	devs    []sim.Device
	issuer  *keyfile.Key
	charger sim.Device      // runs a session under a grant beside the load
	session *chargerSession // what it did
}

// runGateway runs the gateway under the simulated load, redeems a voucher
// for the kiosk half-way through, then seals every window and waits for
// the forwarder to deliver them; it returns the simulator's report.
func runGateway(ctx context.Context, g *gateway.Gateway, opts Options, l load) (*sim.Report, error) {
	out := opts.Out
	gctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(gctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		stop()
		return nil, err
	}
	fmt.Fprintf(out, "\nSimulated load: %.0f tickets/s for %v, signed before the clock starts\n", opts.Rate, opts.Duration)
	// Half-way through the sending, the kiosk's customer buys a 20.00 EUR
	// voucher and the gateway redeems it: the kiosk, dry by then, is
	// served again.
	var wg sync.WaitGroup
	var redeemed string
	sending := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-sending:
		case <-ctx.Done():
			return
		}
		select {
		case <-time.After(opts.Duration / 2):
		case <-ctx.Done():
			return
		}
		redeemed = redeemVoucher(ctx, g, l.issuer)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-sending:
			*l.session = runChargerSession(ctx, l.broker, l.charger)
		case <-ctx.Done():
		}
	}()
	var once sync.Once
	rep, err := sim.Run(ctx, sim.Config{Broker: l.broker, Devices: l.devs, Rate: opts.Rate, Duration: opts.Duration,
		InFlight: 4, Drain: 10 * time.Second, Progress: out, Sending: func() { once.Do(func() { close(sending) }) }})
	once.Do(func() { close(sending) }) // a run that failed before sending: the voucher goes anyway
	wg.Wait()
	if redeemed != "" {
		fmt.Fprintf(out, "  mid-run: %s\n", redeemed)
	}
	if err == nil && l.session.Err != nil {
		err = l.session.Err
	}
	if err == nil {
		// Settle up: seal every open window and let the forwarder deliver.
		err = g.CloseWindows(ctx, time.Now().Add(24*time.Hour))
		deadline := time.Now().Add(30 * time.Second)
		for err == nil {
			ir, ierr := g.Books().Inspect(nil)
			if ierr != nil || ir.Outbox == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	stop()
	if gerr := <-done; err == nil {
		err = gerr
	}
	return rep, err
}

// redeemVoucher signs a 20.00 EUR voucher for the kiosk and has the
// gateway redeem it; it says what happened.
func redeemVoucher(ctx context.Context, g *gateway.Gateway, issuer *keyfile.Key) string {
	signer, err := protocol.NewEd25519Signer(issuer.Private)
	if err != nil {
		return err.Error()
	}
	var enc protocol.Encoder
	v, err := enc.AppendVoucher(nil, &protocol.Voucher{ID: "V-DEMO-0001", Account: "kiosk", Amount: 20_000_000_000, Currency: "EUR",
		Expiry: uint64(time.Now().Add(time.Hour).UnixMilli()), Issuer: "stadtwerk"}, signer)
	if err != nil {
		return err.Error()
	}
	r, err := g.Ingest().RedeemVoucher(ctx, v, "", "demo")
	if err != nil {
		return "voucher refused: " + err.Error()
	}
	return fmt.Sprintf("voucher %s redeemed for the kiosk: %s, balance %s", "V-DEMO-0001",
		metering.Money{Nanos: r.Amount, Currency: "EUR"}, metering.Money{Nanos: r.Balance, Currency: "EUR"})
}

// settle reads the books back from the state file the gateway left, pays
// the providers' wallets out and reconciles everything to the nano.
func settle(dir string, recv *provider.Receiver, rep *sim.Report, session chargerSession) (*Result, error) {
	st, err := store.Open(filepath.Join(dir, gateway.StateFile), store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	insp, err := ledger.New(st, ledger.Config{}).Inspect(nil)
	if err != nil {
		return nil, err
	}
	// The providers' wallets pay out: stadtwerk's platform keeps 5% +
	// 0.10 EUR (at most 5.00), and a creator and a publisher share the rest
	// 70/30 in whole cents; telco's few nanos stay pending under its
	// threshold.
	payouts, err := recv.RunPayouts(context.Background(), map[string]provider.PayoutPolicy{
		"stadtwerk": {Provider: "stadtwerk", Threshold: "1.00 EUR", FeeBasisPoints: 500, FeeFixed: "0.10 EUR", FeeCap: "5.00 EUR",
			Payees: []provider.PayeeWeight{{ID: "creator", Weight: 70}, {ID: "publisher", Weight: 30}}},
		"telco": {Provider: "telco", Threshold: "1.00 EUR", Payees: []provider.PayeeWeight{{ID: "telco-ops", Weight: 1}}},
	}, time.Now())
	if err != nil {
		return nil, err
	}
	wallets, err := recv.Wallets(context.Background())
	if err != nil {
		return nil, err
	}
	rrep, err := recv.Report()
	if err != nil {
		return nil, err
	}
	var received metering.Nanos
	gaps := 0
	for _, g := range rrep.Gaps {
		gaps += len(g)
	}
	session.Paid, session.Released = insp.Reconcile.Grants.Paid, insp.Reconcile.Grants.Released
	res := &Result{Sim: rep, Inspect: insp, DataDir: dir, Received: rrep, Payouts: payouts, Wallets: wallets, Session: session}
	var paid, fees, carried, pending metering.Nanos
	walletsBalanced := true
	for _, w := range wallets {
		paid, fees, carried, pending = paid+w.Paid, fees+w.Fees, carried+w.Carried, pending+w.Pending
		walletsBalanced = walletsBalanced && w.Balanced
	}
	rc := insp.Reconcile
	for _, t := range rrep.Totals {
		received += metering.Nanos(t.Amount)
	}
	var credited metering.Nanos
	for _, c := range rrep.Credits {
		credited += metering.Nanos(c.Amount)
	}
	simCharged := metering.Nanos(rep.Charged["EUR"])
	res.Balanced = rc.Balanced && simCharged+session.Charged == rc.ReceiptsCharged && rc.Reserved == 0 && session.Paid == session.Charged && rep.Missing == 0 && rep.BadReceipts == 0 &&
		received == rc.LedgerCharged && gaps == 0 && insp.Outbox == 0 && credited == rc.TopUps &&
		walletsBalanced && paid+fees+carried+pending == rc.LedgerCharged

	res.received, res.credited, res.paid, res.fees, res.carried, res.pending, res.simCharged = received, credited, paid, fees, carried, pending, simCharged
	return res, nil
}

// printReport prints the accounts, the windows, what the providers
// received and paid out, and the reconciliation.
func printReport(out io.Writer, res *Result) {
	insp, rrep, payouts, rc := res.Inspect, res.Received, res.Payouts, res.Inspect.Reconcile
	received, credited, paid, fees, carried, pending, simCharged := res.received, res.credited, res.paid, res.fees, res.carried, res.pending, res.simCharged
	fmt.Fprintf(out, "\n%s\n", res.Session)
	fmt.Fprintf(out, "\nAccounts\n")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, a := range insp.Accounts {
		fmt.Fprintf(tw, "  %s\t%s\tbalance %s\t%d entries\n", a.ID, a.Kind, a.Balance, a.Entries)
	}
	tw.Flush()
	var corrections int
	for _, s := range insp.Sealed {
		if s.Reason == "correction" {
			corrections++
		}
	}
	fmt.Fprintf(out, "\nWindows: %d sealed (%d of them corrections for late tickets), %d still open\n",
		len(insp.Sealed), corrections, len(insp.OpenWindows))
	fmt.Fprintf(out, "\nWhat the providers received (signed aggregates, verified, each once; %d duplicates dropped)\n", rrep.Stats.Duplicates)
	tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, t := range rrep.Totals {
		fmt.Fprintf(tw, "  %s\tfrom %s\t%s\t%d aggregates\n", t.Provider, t.Account,
			metering.Money{Nanos: metering.Nanos(t.Amount), Currency: metering.Currency(t.Currency)}, t.Aggregates)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nPayouts\n")
	for _, p := range payouts {
		for _, s := range p.Payees {
			fmt.Fprintf(out, "  %s #%d: %s %s\n", p.Provider, p.Number, s.ID, metering.Money{Nanos: s.Amount, Currency: metering.Currency(p.Currency)})
		}
		fmt.Fprintf(out, "  %s #%d: platform fee %s, carried %s, over %d aggregates\n", p.Provider, p.Number,
			metering.Money{Nanos: p.Fee, Currency: metering.Currency(p.Currency)}, metering.Money{Nanos: p.CarryOut, Currency: metering.Currency(p.Currency)}, p.Count)
	}
	fmt.Fprintf(out, "\nReconciliation (nano-EUR)\n")
	tw = tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	rows := [][2]string{
		{"charged in the receipts the devices got", fmt.Sprint(simCharged + res.Session.Charged)},
		{"  of which under a grant, from its reservation", fmt.Sprint(res.Session.Paid)},
		{"charged in the receipts the gateway stored", fmt.Sprint(rc.ReceiptsCharged)},
		{"debited in the ledger", fmt.Sprint(rc.LedgerCharged)},
		{"in sealed windows", fmt.Sprint(rc.WindowsSealed)},
		{"in open windows", fmt.Sprint(rc.WindowsOpen)},
		{"sealed + open", fmt.Sprint(rc.WindowsSealed + rc.WindowsOpen)},
		{"received by the providers", fmt.Sprint(received)},
		{"paid to payees", fmt.Sprint(paid)},
		{"+ platform fees", fmt.Sprint(fees)},
		{"+ carried", fmt.Sprint(carried)},
		{"+ pending (under the threshold)", fmt.Sprint(pending)},
		{"= received", fmt.Sprint(paid + fees + carried + pending)},
		{"opening balances", fmt.Sprint(rc.Opening)},
		{"+ top-ups and vouchers", fmt.Sprint(rc.TopUps)},
		{"credits the providers were sent", fmt.Sprint(credited)},
		{"- charges", fmt.Sprint(rc.LedgerCharged)},
		{"= balances", fmt.Sprint(rc.Opening + rc.TopUps + rc.Adjustments - rc.LedgerCharged)},
		{"balances in the books", fmt.Sprint(rc.Balances)},
		{"- reserved by open grants", fmt.Sprint(rc.Reserved)},
		{"= available", fmt.Sprint(rc.Available)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%s\t\n", r[0], r[1])
	}
	tw.Flush()
	verdict := "BALANCED: every nano is accounted for"
	if !res.Balanced {
		verdict = "NOT BALANCED"
	}
	fmt.Fprintf(out, "\n%s (= %s)\n", verdict, metering.Money{Nanos: rc.LedgerCharged, Currency: "EUR"})
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
