// Package console is the web console: server-rendered pages on the HTTP
// listener under /console/, readable without JavaScript, kept live by
// server-sent events where JavaScript runs.
//
// Who may do what (the rule the handlers below keep):
//   - reading: any request from a loopback address whose Host is a
//     loopback name or address (so a page of another site, rebinding a
//     name to 127.0.0.1, cannot read it); from elsewhere, only with the
//     operator API's bearer token in an Authorization header;
//   - changing state (a top-up, a release, a void, a resume): only with
//     the operator API's token (operator.token_file), sent in the form or
//     the Authorization header, and recorded in the audit log as
//     "console-token". Without a configured token the console is read-only.
//
// No page loads anything from another origin; the Content-Security-Policy
// says so.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway/ingest"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/gateway/registry"
	"github.com/farthing-iot/farthing/gateway/store"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

//go:embed *.html static
var consoleFiles embed.FS

// consoleEventsMax caps the live-update streams open at once, so that
// open console tabs never take the HTTP listener's slots from scrapers and
// health checks; a stream ends after consoleEventsFor and the browser
// opens it again.
const (
	consoleEventsMax   = 8
	consoleEventsEvery = 2 * time.Second
	consoleEventsFor   = 10 * time.Minute
	consolePageSize    = 100
	consoleRecent      = 20
)

// Deps is what the console shows and acts on.
type Deps struct {
	Store  *store.Store
	Ingest *ingest.Ingest
	// Metrics count the console's refusals and changes; Gatherer is read
	// once a second for the rates and latencies the overview shows.
	Metrics  *ingest.Metrics
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// GatewayID names the gateway on every page.
	GatewayID string
	// ExternalMQTT: devices connect to an external broker, whose sessions
	// the gateway does not know.
	ExternalMQTT bool
	// Upstreams are the configured upstreams' names, in order.
	Upstreams []string
	// Limits are the accounts' configured caps and low-balance levels.
	Limits map[string]AccountLimits
	// TokenFile is the operator token (operator.token_file); "" makes the
	// console read-only.
	TokenFile string
	// Online returns the transports a device has a session over now;
	// Connected the number of device sessions per transport.
	Online    func(device string) []string
	Connected func() map[string]int
	// Sending returns the seq an upstream is sending and has not had
	// confirmed (0: none).
	Sending func(upstream string) uint64
	// Clock says what the gateway makes of its own clock: "" while
	// nothing is wrong, else why it is likely wrong. Nil: not watched.
	Clock func() string
}

// AccountLimits is what an account's page shows of its configuration
// (decimals in its currency; "" is none).
type AccountLimits struct {
	DailyCap, MonthlyCap, LowBalance string
}

// Console is the web console's handler and what it keeps between
// requests.
type Console struct {
	g       Deps
	pages   map[string]*template.Template
	token   *[sha256.Size]byte // the operator token's hash; nil: read-only
	streams chan struct{}      // a slot per open event stream
	sampler *sampler
	// sameSite refuses a change whose Origin or Sec-Fetch-Site says
	// another site sent it, even with the token.
	sameSite *http.CrossOriginProtection

	mu          sync.Mutex // guards inspected and inspectedAt
	inspected   *ledger.Report
	inspectedAt time.Time
}

// New parses the pages and loads the operator token, if any.
func New(g Deps) (*Console, error) {
	c := &Console{g: g, pages: map[string]*template.Template{}, streams: make(chan struct{}, consoleEventsMax),
		sampler: newSampler(g.Gatherer), sameSite: http.NewCrossOriginProtection()}
	funcs := template.FuncMap{
		"money": func(n metering.Nanos, cur string) string {
			return metering.Money{Nanos: n, Currency: metering.Currency(cur)}.String()
		},
		"nanos":  func(n metering.Nanos) string { return metering.FormatNanos(n) },
		"ms":     timeHTML,
		"ums":    func(ms uint64) template.HTML { return timeHTML(int64(ms)) },
		"since":  formatSince,
		"query":  url.QueryEscape,
		"path":   url.PathEscape,
		"add":    func(a, b int) int { return a + b },
		"uint":   func(n uint64) string { return strconv.FormatUint(n, 10) },
		"signed": func(n metering.Nanos) string { return strconv.FormatInt(int64(n), 10) },
	}
	pages, err := fs.Glob(consoleFiles, "*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(p, ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(consoleFiles, "layout.html", p)
		if err != nil {
			return nil, fmt.Errorf("console page %s: %w", name, err)
		}
		c.pages[name] = t
	}
	if f := g.TokenFile; f != "" {
		t, err := operator.LoadToken(f)
		if err != nil {
			return nil, fmt.Errorf("operator.%v", err)
		}
		c.token = &t
	}
	return c, nil
}

// CanWrite reports whether the console takes changes (an operator token
// is configured).
func (c *Console) CanWrite() bool { return c.token != nil }

// Sample reads the metrics once a second, for the rates and latencies the
// overview shows, until ctx ends.
func (c *Console) Sample(ctx context.Context) { c.sampler.run(ctx) }

// Routes adds the console's pages to m.
func (c *Console) Routes(m *http.ServeMux) {
	static, _ := fs.Sub(consoleFiles, "static")
	m.Handle("GET /console/static/", c.guard(http.StripPrefix("/console/static/", http.FileServerFS(static))))
	m.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusSeeOther))
	m.Handle("GET /favicon.ico", c.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		http.ServeFileFS(w, r, consoleFiles, "static/favicon.svg")
	})))
	page := func(pattern string, h func(w http.ResponseWriter, r *http.Request) (string, any, error)) {
		m.Handle(pattern, c.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name, data, err := h(w, r)
			c.render(w, r, name, data, err)
		})))
	}
	page("GET /console/{$}", c.overviewPage)
	page("GET /console/devices", c.devicesPage)
	page("GET /console/devices/{id}", c.devicePage)
	page("GET /console/accounts", c.accountsPage)
	page("GET /console/accounts/{id}", c.accountPage)
	page("GET /console/windows", c.windowsPage)
	page("GET /console/quarantine", c.quarantinePage)
	m.Handle("GET /console/events", c.guard(http.HandlerFunc(c.events)))
	m.Handle("POST /console/accounts/{id}/topup", c.guard(c.change(c.topUp)))
	m.Handle("POST /console/accounts/{id}/adjust", c.guard(c.change(c.adjust)))
	m.Handle("POST /console/quarantine/{device}/{seq}/{action}", c.guard(c.change(c.settle)))
	m.Handle("POST /console/devices/{id}/resume", c.guard(c.change(c.resume)))
}

// guard lets a request read the console if it comes from loopback to a
// loopback name, or carries the operator token; it sets the headers every
// console answer has.
func (c *Console) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-store")
		if !(loopbackAddr(r.RemoteAddr) && loopbackHost(r.Host)) && !c.bearer(r) {
			c.g.Metrics.Transport.WithLabelValues("console", "refused").Inc()
			c.g.Log.Warn("console: refused a request from off loopback without the operator token", "remote", r.RemoteAddr, "host", r.Host, "path", r.URL.Path)
			http.Error(w, "the console answers loopback requests (use an SSH tunnel) or requests with the operator token", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// bearer reports whether r carries the operator token in its
// Authorization header.
func (c *Console) bearer(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && c.tokenIs(got)
}

func (c *Console) tokenIs(s string) bool {
	if c.token == nil || s == "" {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(s)))
	return subtle.ConstantTimeCompare(h[:], c.token[:]) == 1
}

// loopbackAddr reports whether a request's remote address is loopback.
func loopbackAddr(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHost reports whether a Host header names loopback: localhost or
// a loopback address, with any port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// consolePage is what every page's layout gets.
type consolePage struct {
	Title    string
	Nav      string // the section, for aria-current
	Gateway  string
	Version  string
	Flash    string // what the last change did
	Problem  string // why it was refused
	CanWrite bool   // an operator token is configured
	Now      string
	Data     any
}

// render answers a page, or the error a handler returned.
func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, data any, err error) {
	if err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, ledger.ErrUnknownAccount), errors.Is(err, operator.ErrNoSuchDevice), errors.Is(err, ledger.ErrNoHold):
			status = http.StatusNotFound
		default:
			c.g.Log.Error("console: page not served", "path", r.URL.Path, "error", err)
		}
		c.fail(w, r, status, err.Error())
		return
	}
	t := c.pages[name]
	p := consolePage{Title: pageTitles[name], Nav: name, Gateway: c.g.GatewayID, Flash: r.URL.Query().Get("done"),
		Problem: r.URL.Query().Get("problem"), CanWrite: c.token != nil, Now: time.Now().UTC().Format(time.RFC3339), Data: data}
	if strings.HasPrefix(name, "device") {
		p.Nav = "devices"
	} else if strings.HasPrefix(name, "account") {
		p.Nav = "accounts"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := t.ExecuteTemplate(w, "layout", p); err != nil {
		c.g.Log.Debug("console: page not written", "page", name, "error", err)
	}
}

// fail answers an HTML page saying why, with status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, why string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	p := consolePage{Title: http.StatusText(status), Gateway: c.g.GatewayID, CanWrite: c.token != nil,
		Now: time.Now().UTC().Format(time.RFC3339), Data: why}
	if err := c.pages["error"].ExecuteTemplate(w, "layout", p); err != nil {
		c.g.Log.Debug("console: page not written", "page", "error", "path", r.URL.Path, "error", err)
	}
}

var pageTitles = map[string]string{"overview": "Overview", "devices": "Devices", "device": "Device", "accounts": "Accounts",
	"account": "Account", "windows": "Windows and aggregates", "quarantine": "Quarantine"}

// report returns the state file's report, read at most once every two
// seconds however many pages and streams ask.
func (c *Console) report() (*ledger.Report, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inspected != nil && time.Since(c.inspectedAt) < consoleEventsEvery {
		return c.inspected, nil
	}
	rep, err := c.g.Ingest.Books().Inspect(&c.g.Ingest.Snapshot().Terms)
	if err != nil {
		return nil, err
	}
	c.inspected, c.inspectedAt = rep, time.Now()
	return rep, nil
}

// fresh drops the kept report, after a change through the console.
func (c *Console) fresh() {
	c.mu.Lock()
	c.inspected = nil
	c.mu.Unlock()
}

// figure is one number on the overview: its element id (what the live
// updates address), label and value.
type figure struct {
	ID, Label, Value string
	Title            string // shown on hover: an amount's nanos
}

// panel is one part of the overview.
type panel struct {
	ID, Title string
	Figures   []figure
}

// overview is the overview's panels, from the metrics sampled over the
// last seconds, the transports and the state file's report.
func (c *Console) overview() ([]panel, error) {
	rep, err := c.report()
	if err != nil {
		return nil, err
	}
	g := c.g
	rates := c.sampler.rates()
	var tickets []figure
	for _, k := range rates.keys {
		id := "rate-" + strings.ReplaceAll(k, "/", "-")
		label := strings.TrimSuffix(strings.Replace(k, "/", ": ", 1), ": ")
		tickets = append(tickets, figure{ID: id, Label: label, Value: fmt.Sprintf("%.1f/s (%d since start)", rates.perSecond[k], rates.total[k])})
	}
	if len(tickets) == 0 {
		tickets = append(tickets, figure{ID: "rate-none", Label: "tickets", Value: "none since start"})
	}
	commit := []figure{
		{ID: "commit-p50", Label: "commit p50", Value: rates.commitP50},
		{ID: "commit-p99", Label: "commit p99", Value: rates.commitP99},
		{ID: "commit-count", Label: "commits in the last 10 s", Value: strconv.FormatUint(rates.commits, 10)},
	}
	commit = append(commit, c.clockFigure())
	st := g.Store.Stats()
	disk := []figure{
		{ID: "store-bytes", Label: "state file", Value: byteSize(st.FileBytes)},
		{ID: "store-inuse", Label: "in use", Value: byteSize(int64(rates.gauges["farthing_store_inuse_bytes"]))},
		{ID: "disk-free", Label: "free on its file system", Value: byteSize(int64(rates.gauges["farthing_disk_free_bytes"]))},
	}
	var conn []figure
	connected := g.Connected()
	for _, t := range slices.Sorted(maps.Keys(connected)) {
		conn = append(conn, figure{ID: "connected-" + t, Label: t, Value: strconv.Itoa(connected[t])})
	}
	if g.ExternalMQTT {
		conn = append(conn, figure{ID: "connected-mqtt", Label: "mqtt", Value: "external broker: not known here"})
	}
	out := []figure{{ID: "oldest-unforwarded", Label: "oldest aggregate not confirmed by every upstream",
		Value: (time.Duration(rates.gauges["farthing_oldest_unforwarded_seconds"]) * time.Second).String()}}
	for _, u := range g.Upstreams {
		confirmed := rep.Upstreams[u]
		waiting := 0
		for _, s := range rep.Sealed {
			if s.Seq > confirmed {
				waiting++
			}
		}
		out = append(out, figure{ID: "upstream-" + u, Label: u, Value: fmt.Sprintf("%d waiting, confirmed up to %d", waiting, confirmed)})
	}
	if len(g.Upstreams) == 0 {
		out = append(out, figure{ID: "upstream-none", Label: "upstreams", Value: "none configured: aggregates wait in the outbox"})
	}
	books := booksFigures(rep)
	return []panel{{"tickets", "Tickets per second (last 10 s) by outcome and reason", tickets},
		{"commit", "Commit latency (last 10 s), and the clock", commit}, {"disk", "Disk", disk},
		{"connected", "Connected devices by transport", conn}, {"outbox", "Outbox by upstream", out},
		{"books", "Books (as farthing inspect)", books}}, nil
}

// booksFigures is the overview's books panel, as farthing inspect has
// them: counts, whether the books add up, and money one row per currency
// (never summed across currencies), its nanos on hover.
func booksFigures(rep *ledger.Report) []figure {
	rc := rep.Reconcile
	balanced := "yes"
	if !rc.Balanced {
		balanced = "NO: see farthing inspect"
	}
	books := []figure{
		{ID: "inspect-devices", Label: "devices with tickets", Value: strconv.Itoa(len(rep.Devices))},
		{ID: "inspect-accounts", Label: "accounts", Value: strconv.Itoa(len(rep.Accounts))},
		{ID: "inspect-tickets", Label: "tickets in the books (accepted and held)", Value: strconv.FormatUint(rc.Tickets, 10)},
		{ID: "inspect-open-windows", Label: "open windows", Value: strconv.Itoa(len(rep.OpenWindows))},
		{ID: "inspect-sealed", Label: "sealed aggregates kept", Value: strconv.Itoa(len(rep.Sealed))},
		{ID: "inspect-outbox", Label: "outbox", Value: strconv.Itoa(rep.Outbox)},
		{ID: "inspect-held", Label: "held, open", Value: strconv.Itoa(rc.Held.Open)},
		{ID: "inspect-balanced", Label: "receipts = ledger = windows, balances add up", Value: balanced},
	}
	for _, l := range rc.Currencies { // one row per currency: never summed across them
		for _, m := range []struct {
			what string
			n    metering.Nanos
		}{{"charged", l.Charged}, {"balances", l.Balances}, {"reserved by grants", l.Reserved}} {
			books = append(books, figure{ID: "inspect-" + strings.ReplaceAll(m.what, " ", "-") + "-" + l.Currency, Label: m.what + " (" + l.Currency + ")",
				Value: metering.Money{Nanos: m.n, Currency: metering.Currency(l.Currency)}.String(), Title: strconv.FormatInt(int64(m.n), 10) + " nanos"})
		}
	}
	return books
}

// clockFigure is what the gateway makes of its own clock.
func (c *Console) clockFigure() figure {
	clock := "right, as far as the gateway can tell"
	if c.g.Clock != nil {
		if why := c.g.Clock(); why != "" {
			clock = "LIKELY WRONG: " + strings.TrimPrefix(why, "clock: ")
		}
	}
	return figure{ID: "clock", Label: "the gateway's clock (" + time.Now().UTC().Format(time.RFC3339) + ")", Value: clock}
}

// overviewData is the overview page: the last hour's charts and the
// panels of figures.
type overviewData struct {
	Charts []template.HTML
	Panels []panel
}

func (c *Console) overviewPage(_ http.ResponseWriter, _ *http.Request) (string, any, error) {
	p, err := c.overview()
	d := overviewData{Panels: p}
	for _, ch := range c.sampler.charts() {
		d.Charts = append(d.Charts, ch.svg())
	}
	return "overview", d, err
}

// events streams the overview's figures every two seconds as server-sent
// events ("figures": a JSON object of element id → value) for as long as
// consoleEventsFor; a stream over the cap is refused with 503.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		c.g.Metrics.Transport.WithLabelValues("console", "events_refused").Inc()
		c.g.Log.Warn("console: live-update stream refused: too many open", "remote", r.RemoteAddr, "max", consoleEventsMax)
		w.Header().Set("Retry-After", "10")
		http.Error(w, "too many live-update streams open", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ctx, cancel := context.WithTimeout(r.Context(), consoleEventsFor)
	defer cancel()
	t := time.NewTicker(consoleEventsEvery)
	defer t.Stop()
	for {
		p, err := c.overview()
		if err != nil {
			return
		}
		m := map[string]string{}
		for _, pn := range p {
			for _, f := range pn.Figures {
				m[f.ID] = f.Value
			}
		}
		b, err := json.Marshal(m)
		if err != nil {
			c.g.Log.Error("console: figures not encoded", "error", err)
			return
		}
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: figures\ndata: %s\n\n", b); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// deviceRow is a device in the devices list.
type deviceRow struct {
	ID, Account, Provider, KeyType string
	Online                         string // the transports it is connected over, "" if none
	LastSeen                       time.Time
	LastTransport                  string
	LastSeq                        uint64
	Balance                        string
	Held                           int
	Suspended                      bool
	Inactive                       string // "revoked", "disabled" or ""
}

func (c *Console) row(d *registry.Device, seqs map[string]uint64, held map[string]int, balances map[string]string) deviceRow {
	g := c.g
	r := deviceRow{ID: d.ID, Account: d.Account, Provider: d.Provider, KeyType: d.KeyType, LastSeq: seqs[d.ID], Held: held[d.ID],
		Suspended: g.Ingest.Suspended(d.ID), Balance: balances[d.Account]}
	on := g.Online(d.ID)
	sort.Strings(on)
	r.Online = strings.Join(on, ", ")
	r.LastSeen, r.LastTransport = g.Ingest.LastSeen(d.ID)
	switch {
	case d.Revoked:
		r.Inactive = "revoked"
	case d.Disabled:
		r.Inactive = "disabled"
	}
	return r
}

// balances returns each account's balance as text.
func (c *Console) balances() (map[string]string, error) {
	as, err := c.g.Ingest.Books().Accounts(&c.g.Ingest.Snapshot().Terms)
	out := map[string]string{}
	for _, a := range as {
		out[a.ID] = metering.Money{Nanos: a.Balance, Currency: metering.Currency(a.Currency)}.String()
	}
	return out, err
}

func (c *Console) heldByDevice() (map[string]int, error) {
	hs, err := c.g.Ingest.Books().Holds(protocol.HoldHeld, "")
	out := map[string]int{}
	for _, h := range hs {
		out[h.Device]++
	}
	return out, err
}

// devicesList is the devices page: a search and one page of the result.
type devicesList struct {
	Query      string
	Rows       []deviceRow
	Total      int
	Page, Last int
}

func (c *Console) devicesPage(_ http.ResponseWriter, r *http.Request) (string, any, error) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	var match []*registry.Device
	for _, d := range c.g.Ingest.Snapshot().Registry.Devices() {
		if q == "" || strings.Contains(strings.ToLower(d.ID), strings.ToLower(q)) || strings.Contains(strings.ToLower(d.Account), strings.ToLower(q)) {
			match = append(match, d)
		}
	}
	l := devicesList{Query: q, Total: len(match), Last: max(0, (len(match)-1)/consolePageSize)}
	l.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	l.Page = min(max(l.Page, 0), l.Last)
	match = match[l.Page*consolePageSize : min(len(match), (l.Page+1)*consolePageSize)]
	ids := make([]string, len(match))
	for i, d := range match {
		ids[i] = d.ID
	}
	seqs, err := c.g.Ingest.Books().DeviceSeqs(ids)
	if err != nil {
		return "", nil, err
	}
	held, err := c.heldByDevice()
	if err != nil {
		return "", nil, err
	}
	bal, err := c.balances()
	if err != nil {
		return "", nil, err
	}
	for _, d := range match {
		l.Rows = append(l.Rows, c.row(d, seqs, held, bal))
	}
	return "devices", l, nil
}

// deviceDetail is a device's page.
type deviceDetail struct {
	deviceRow
	Tariffs  map[string]string
	DailyCap string
	Books    *ledger.DeviceView // nil: no ticket accepted yet
	Holds    []ledger.Held
}

func (c *Console) devicePage(_ http.ResponseWriter, r *http.Request) (string, any, error) {
	id := r.PathValue("id")
	d := c.g.Ingest.Snapshot().Registry.Device(id)
	if d == nil {
		return "", nil, fmt.Errorf("%w: %s", operator.ErrNoSuchDevice, id)
	}
	v, err := c.g.Ingest.Books().Device(id, consoleRecent)
	det := deviceDetail{Tariffs: d.Tariffs, DailyCap: d.DailyCap}
	switch {
	case err == nil:
		det.Books = &v
	case !errors.Is(err, ledger.ErrUnknownDevice):
		return "", nil, err
	}
	if det.Holds, err = c.g.Ingest.Books().Holds("", id); err != nil {
		return "", nil, err
	}
	held := map[string]int{}
	for _, h := range det.Holds {
		if h.State == protocol.HoldHeld {
			held[id]++
		}
	}
	bal, err := c.balances()
	if err != nil {
		return "", nil, err
	}
	det.deviceRow = c.row(d, map[string]uint64{id: v.LastSeq}, held, bal)
	return "device", det, nil
}

func (c *Console) accountsPage(_ http.ResponseWriter, _ *http.Request) (string, any, error) {
	as, err := c.g.Ingest.Books().Accounts(&c.g.Ingest.Snapshot().Terms)
	return "accounts", as, err
}

// accountDetail is an account's page: the account, its most recent
// entries (newest first) and the devices that charge it.
type accountDetail struct {
	ledger.AccountView
	Entries []metering.Entry
	Devices []string
	Config  AccountLimits // its caps and low-balance level, as configured (zero if it is in the books only)
}

func (c *Console) accountPage(_ http.ResponseWriter, r *http.Request) (string, any, error) {
	id := r.PathValue("id")
	a, err := c.g.Ingest.Books().Account(&c.g.Ingest.Snapshot().Terms, id)
	if err != nil {
		return "", nil, err
	}
	es, err := c.g.Ingest.Books().AccountEntries(id, 0)
	if err != nil {
		return "", nil, err
	}
	slices.Reverse(es)
	det := accountDetail{AccountView: a, Entries: es[:min(len(es), 50)]}
	det.Config = c.g.Limits[id]
	for _, d := range c.g.Ingest.Snapshot().Registry.Devices() {
		if d.Account == id {
			det.Devices = append(det.Devices, d.ID)
		}
	}
	return "account", det, nil
}

// sealedRow is a sealed aggregate and where it is with each upstream.
type sealedRow struct {
	ledger.WindowReport
	Upstreams []string // "name: confirmed", "name: sending", "name: waiting"
}

// windowsList is the windows page.
type windowsList struct {
	Open   []ledger.WindowReport
	Sealed []sealedRow
	Shown  int
}

func (c *Console) windowsPage(_ http.ResponseWriter, _ *http.Request) (string, any, error) {
	rep, err := c.report()
	if err != nil {
		return "", nil, err
	}
	l := windowsList{Open: rep.OpenWindows, Shown: min(len(rep.Sealed), 200)}
	sealed := rep.Sealed[len(rep.Sealed)-l.Shown:]
	for i := len(sealed) - 1; i >= 0; i-- {
		s := sealedRow{WindowReport: sealed[i]}
		for _, u := range c.g.Upstreams {
			state := "waiting"
			switch {
			case s.Seq <= rep.Upstreams[u]:
				state = "confirmed"
			case c.g.Sending(u) == s.Seq:
				state = "sending"
			}
			s.Upstreams = append(s.Upstreams, u+": "+state)
		}
		l.Sealed = append(l.Sealed, s)
	}
	return "windows", l, nil
}

// holdsList is the quarantine page.
type holdsList struct {
	State string
	Holds []ledger.Held
}

func (c *Console) quarantinePage(_ http.ResponseWriter, r *http.Request) (string, any, error) {
	state := r.URL.Query().Get("state")
	switch state {
	case "all":
		state = ""
	case protocol.HoldHeld, protocol.HoldReleased, protocol.HoldVoided:
	default:
		state = protocol.HoldHeld
	}
	hs, err := c.g.Ingest.Books().Holds(state, "")
	return "quarantine", holdsList{State: state, Holds: hs}, err
}

// errConsoleForbidden: a change without the operator token.
var errConsoleForbidden = errors.New("the operator token is required for a change")

// change wraps a form that changes state: it reads the form (at most 8
// KB), checks the token, runs do, and sends the browser back to the page
// it came from with what happened (303). A refusal is counted and logged;
// without the token it is 401 and nothing is done.
func (c *Console) change(do func(r *http.Request) (back, done string, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := c.sameSite.Check(r); err != nil { // a second layer beside the token: a form another site posts is refused
			c.g.Metrics.Transport.WithLabelValues("console", "cross_site_refused").Inc()
			c.g.Log.Warn("console: change refused: it came from another site", "remote", r.RemoteAddr, "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
			c.fail(w, r, http.StatusForbidden, "a change must come from the console's own pages, not another site's")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, http.StatusBadRequest, "the form could not be read: "+err.Error())
			return
		}
		if !c.tokenIs(r.PostForm.Get("token")) && !c.bearer(r) {
			c.g.Metrics.Transport.WithLabelValues("console", "unauthorized").Inc()
			c.g.Log.Warn("console: change refused without the operator token", "remote", r.RemoteAddr, "path", r.URL.Path)
			msg := errConsoleForbidden.Error()
			if c.token == nil {
				msg = "the console is read-only: set operator.token_file to make changes from it"
			}
			c.fail(w, r, http.StatusUnauthorized, msg)
			return
		}
		back, done, err := do(r.WithContext(operator.ContextWithCredential(r.Context(), "console-token")))
		c.fresh()
		q := url.Values{}
		if err != nil {
			c.g.Metrics.Transport.WithLabelValues("console", "change_refused").Inc()
			c.g.Log.Warn("console: change refused", "path", r.URL.Path, "error", err)
			q.Set("problem", err.Error())
		} else {
			q.Set("done", done)
		}
		http.Redirect(w, r, back+"?"+q.Encode(), http.StatusSeeOther)
	})
}

func (c *Console) topUp(r *http.Request) (string, string, error) {
	id := r.PathValue("id")
	back := "/console/accounts/" + url.PathEscape(id)
	amount, err := metering.ParseMoney(r.PostForm.Get("amount"))
	if err != nil {
		return back, "", fmt.Errorf("amount: %w", err)
	}
	ref := strings.TrimSpace(r.PostForm.Get("ref"))
	if ref == "" {
		return back, "", errors.New("ref: a reference (a payment id) is required, so that sending the form twice tops up once")
	}
	res, err := c.g.Ingest.Books().TopUp(r.Context(), &c.g.Ingest.Snapshot().Terms, id, amount, ledger.Request{Ref: ref, Credential: operator.CredentialOf(r)})
	if err != nil {
		return back, "", err
	}
	c.g.Metrics.Transport.WithLabelValues("operator", "top_up").Inc()
	c.g.Log.Info("top-up", "account", id, "amount", amount.String(), "ref", ref, "repeated", res.Repeated, "credential", operator.CredentialOf(r))
	done := "topped up " + amount.String() + " (ref " + ref + ")"
	if res.Repeated {
		done = "ref " + ref + " was already used for this top-up: nothing added"
	}
	return back, done, nil
}

// adjust books an adjustment from the account page's form (see
// ledger.Books.Adjust): a signed amount, a reason code, a note, maybe the
// voucher it settles, once per reference.
func (c *Console) adjust(r *http.Request) (string, string, error) {
	id := r.PathValue("id")
	back := "/console/accounts/" + url.PathEscape(id)
	amount, err := metering.ParseMoney(r.PostForm.Get("amount"))
	if err != nil {
		return back, "", fmt.Errorf("amount: %w", err)
	}
	ref := strings.TrimSpace(r.PostForm.Get("ref"))
	if ref == "" {
		return back, "", errors.New("ref: a reference is required, so that sending the form twice adjusts once")
	}
	adj := ledger.Adjustment{Amount: amount, Reason: strings.TrimSpace(r.PostForm.Get("reason")), Note: strings.TrimSpace(r.PostForm.Get("note")),
		Voucher: strings.TrimSpace(r.PostForm.Get("voucher"))}
	res, err := c.g.Ingest.Books().Adjust(r.Context(), &c.g.Ingest.Snapshot().Terms, id, adj, ledger.Request{Ref: ref, Credential: operator.CredentialOf(r)})
	if err != nil {
		return back, "", err
	}
	c.g.Metrics.Transport.WithLabelValues("operator", "adjustment").Inc()
	c.g.Log.Warn("account adjusted", "account", id, "amount", amount.String(), "reason", adj.Reason, "voucher", adj.Voucher, "ref", ref,
		"repeated", res.Repeated, "credential", operator.CredentialOf(r))
	done := "adjusted by " + amount.String() + " (" + adj.Reason + ", ref " + ref + ")"
	if res.Repeated {
		done = "ref " + ref + " was already used for this adjustment: nothing changed"
	}
	return back, done, nil
}

func (c *Console) settle(r *http.Request) (string, string, error) {
	dev, action := r.PathValue("device"), r.PathValue("action")
	back := "/console/quarantine"
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		return back, "", errors.New("seq: want a number")
	}
	books, terms := c.g.Ingest.Books(), &c.g.Ingest.Snapshot().Terms
	var settle func(context.Context, *ledger.Terms, ledger.HoldSettlement) (ledger.Held, error)
	switch action {
	case "release":
		settle = books.Release
	case "void":
		settle = books.Void
	default:
		return back, "", errors.New("want release or void")
	}
	v, err := settle(r.Context(), terms, ledger.HoldSettlement{Device: dev, Seq: seq, Note: strings.TrimSpace(r.PostForm.Get("note")), Credential: operator.CredentialOf(r)})
	if err != nil {
		return back, "", err
	}
	if !v.Repeated {
		c.g.Metrics.Transport.WithLabelValues("operator", action).Inc()
	}
	c.g.Log.Warn("held ticket "+v.State, "device", dev, "seq", seq, "rule", v.Rule, "charged_nanos", v.Charged,
		"note", v.Note, "repeated", v.Repeated, "credential", operator.CredentialOf(r))
	return back, fmt.Sprintf("%s/%d %s", dev, seq, v.State), nil
}

func (c *Console) resume(r *http.Request) (string, string, error) {
	id := r.PathValue("id")
	back := "/console/devices/" + url.PathEscape(id)
	was, err := c.g.Ingest.Resume(r.Context(), id, operator.CredentialOf(r))
	switch {
	case err != nil:
		return back, "", err
	case !was:
		return back, "", errors.New("the device is not suspended")
	}
	return back, id + " resumed", nil
}

// formatMillis is a time as every page writes one: RFC 3339 in UTC, to
// the millisecond.
func formatMillis(ms int64) string {
	if ms == 0 {
		return "—"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// timeHTML is a time element: RFC 3339 UTC as its text and datetime, the
// gateway's local time as its title.
func timeHTML(ms int64) template.HTML {
	if ms == 0 {
		return "—"
	}
	t := time.UnixMilli(ms)
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`, formatMillis(ms),
		template.HTMLEscapeString(t.Local().Format("Mon 2 Jan 2006 15:04:05 MST")), formatMillis(ms)))
}

// formatSince is a time as "12 s ago (2026-…)"; "never" for zero.
func formatSince(t time.Time) string {
	if t.IsZero() {
		return "not since start"
	}
	return fmt.Sprintf("%s ago (%s)", time.Since(t).Round(time.Second), t.UTC().Format(time.RFC3339))
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
