package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/metering"

	"github.com/chromedp/chromedp"

	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/protocol"
)

// consoleToken is the operator token of the browser test's daemon.
const consoleToken = "console-test-token-0123456789"

// browser starts Debian's headless Chromium driven over the DevTools
// protocol and collects whatever the pages report as an error: console
// errors, uncaught exceptions and the browser log's errors (a resource
// refused by the page's policy or not found).
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: the README's test command installs it (scripts/test.sh)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 2*time.Minute)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s: %s %s", m.Type, m.Text, m.URL))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancelTime(); cancelCtx(); cancelAlloc(); wg.Wait() })
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := problems
		problems = nil
		return out
	}
}

// TestConsoleInABrowser drives the web console in headless Chromium
// against a real daemon with a real device over MQTT: the overview loads
// with no error in the browser and its books figures equal /inspect's,
// its figures update live, a device page shows the ticket the device
// sent, the device search finds it, a top-up and a release through the
// pages work with the operator token and are refused (401, nothing done)
// without it, and a request for another host name is refused. With
// FARTHING_CONSOLE_SCREENSHOT=FILE it writes the overview's screenshot
// there (the README's).
func TestConsoleInABrowser(t *testing.T) {
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"meter-1", "plug-7@kiosk"}, "", "")
	tokenFile := filepath.Join(g.dir, "operator.token")
	if err := os.WriteFile(tokenFile, []byte(consoleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(g.config)
	os.WriteFile(g.config, append(cfg, []byte("operator: {token_file: "+tokenFile+"}\n")...), 0o600)
	if err := os.WriteFile(filepath.Join(g.data, "tariffs.yaml"), []byte(plausibleTariff), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(dctx, g, "meter-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	dev.send(t, 1_000)
	sent := dev.send(t, 2_000) // charged 0.30 EUR: the ticket the device page must show
	if sent.Status != protocol.StatusAccepted || sent.Charged == 0 {
		t.Fatalf("ticket: %+v", sent)
	}
	held := dev.send(t, 4294967295) // a meter fault: held for the quarantine page
	if held.Status != protocol.StatusHeld {
		t.Fatalf("fault: %+v; want held", held)
	}

	ctx, problems := browser(t)
	base := "http://" + g.http + "/console/"

	// The overview: loads without an error, its books figures are
	// /inspect's, and the live updates arrive.
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("inspect-tickets"))); err != nil {
		t.Fatalf("overview: %v", err)
	}
	loadMs, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`performance.getEntriesByType("navigation")[0].loadEventEnd`))
	if err != nil {
		t.Fatalf("navigation timing: %v", err)
	}
	t.Logf("overview loaded in %.1f ms (navigation timing; %v with the test's round trips)", loadMs, time.Since(start).Round(time.Millisecond))
	rep := inspect(t, g.data)
	rc := rep.Reconcile
	want := map[string]string{
		"inspect-tickets":  strconv.FormatUint(rc.Tickets, 10),
		"inspect-devices":  strconv.Itoa(len(rep.Devices)),
		"inspect-accounts": strconv.Itoa(len(rep.Accounts)),
		"inspect-held":     strconv.Itoa(rc.Held.Open),
		"inspect-balanced": "yes",
	}
	// Money in its currency, one row per currency, its nanos on hover.
	if len(rc.Currencies) != 1 || rc.Currencies[0].Currency != "EUR" || rc.Currencies[0].Charged == 0 {
		t.Fatalf("inspect's currencies: %+v", rc.Currencies)
	}
	eur := rc.Currencies[0]
	want["inspect-charged-EUR"] = metering.Money{Nanos: eur.Charged, Currency: "EUR"}.String()
	want["inspect-balances-EUR"] = metering.Money{Nanos: eur.Balances, Currency: "EUR"}.String()
	if title, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("inspect-charged-EUR"), "title")); err != nil ||
		title.Value != strconv.FormatInt(int64(eur.Charged), 10)+" nanos" {
		t.Errorf("the charged amount's title %q, %v; want its nanos", title.Value, err)
	}
	for id, want := range want {
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got != want {
			t.Errorf("overview %s = %q; /inspect says %q", id, got, want)
		}
	}
	if rc.Tickets < 2 || rc.Held.Open != 1 {
		t.Fatalf("inspect: %d tickets, %d held; want at least 2 and 1", rc.Tickets, rc.Held.Open)
	}
	if connected, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("connected-mqtt"))); err != nil || connected != "1" {
		t.Errorf("connected over mqtt: %q, %v; want 1", connected, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`Number(document.getElementById("live").dataset.updates || 0) >= 2`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("no live update within 15 s: %v", err)
	}
	// The last hour's charts, drawn on the server, with the tickets in
	// them once the sampler has two points.
	lined := false
	for deadline := time.Now().Add(40 * time.Second); !lined && time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("chart-tickets"))); err != nil {
			t.Fatalf("overview: %v", err)
		}
		lined, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.querySelector('#chart-tickets polyline[data-series="accepted"]')
		  .getAttribute("points").trim().split(" ").length >= 2)`))
	}
	if !lined {
		t.Fatal("the tickets chart has no line within 40 s")
	}
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("svg.chart")).map(s => s.id + " " + s.querySelectorAll("polyline").length)`))
	if err != nil || len(charts) != 4 {
		t.Fatalf("charts %q, %v; want 4", charts, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`/updated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\./.test(document.getElementById("live").textContent)`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		stamp, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("live")))
		t.Errorf("the live stamp %q: %v; want RFC 3339 UTC", stamp, err)
	}
	if shot := os.Getenv("FARTHING_CONSOLE_SCREENSHOT"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p := problems(); len(p) > 0 {
		t.Fatalf("the overview reported errors: %q", p)
	}

	// The device page shows the ticket the device sent; the search finds
	// the device and only it.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"devices/meter-1")); err != nil {
		t.Fatalf("device page: %v", err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.Search(fmt.Sprintf(`//table[@id="recent-tickets"]//tr[th[text()="%d"]]`, sent.Seq))))
	if err != nil {
		t.Fatalf("device page, ticket %d: %v", sent.Seq, err)
	}
	lastSeq, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("device-last-seq")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(row, "energy_wh=2000") || !strings.Contains(row, "0.3") {
		t.Errorf("device page, ticket %d: %q; want energy_wh=2000 charged 0.3", sent.Seq, row)
	}
	if lastSeq != strconv.FormatUint(held.Seq, 10) {
		t.Errorf("device page last seq %q; want %d", lastSeq, held.Seq)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"devices"), chromedp.SetValue(chromedp.ID("q"), "meter")); err != nil {
		t.Fatalf("device search: %v", err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Submit(chromedp.ID("q"))); err != nil {
		t.Fatalf("device search: %v", err)
	}
	found, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("tbody")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(found, "meter-1") || strings.Contains(found, "plug-7") {
		t.Errorf("search for meter: %q", found)
	}

	// A top-up through the page: refused with a wrong token, done with
	// the right one (once, by its reference).
	topUp := func(token string) string {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"accounts/kiosk"),
			chromedp.SetValue(chromedp.CSS(`input[name="amount"]`), "1.25 EUR"), chromedp.SetValue(chromedp.CSS(`input[name="ref"]`), "PAY-1"),
			chromedp.SetValue(chromedp.CSS(`input[name="token"]`), token)); err != nil {
			t.Fatalf("top-up form: %v", err)
		}
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`form.change button`))); err != nil {
			t.Fatalf("top-up: %v", err)
		}
		body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	// Every control on the forms has a label, and can be reached with the
	// keyboard (no tabindex takes it out of the order).
	for _, page := range []string{"accounts/kiosk", "quarantine", "devices"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+page)); err != nil {
			t.Fatal(err)
		}
		bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("input, button, select, textarea"))
			.filter(e => e.type !== "hidden" && ((e.tagName !== "BUTTON" && e.labels.length === 0) || e.tabIndex < 0 || (e.tagName === "BUTTON" && !e.textContent.trim())))
			.map(e => e.outerHTML)`))
		if err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("%s: controls without a label or out of the keyboard order: %q", page, bad)
		}
	}
	if body := topUp("not-the-operator-token"); !strings.Contains(body, "operator token is required") {
		t.Errorf("top-up with a wrong token answered %q", body)
	}
	if p := problems(); len(p) != 1 || !strings.Contains(p[0], "401") {
		t.Errorf("the browser's errors after a refused top-up: %q; want the 401 alone", p)
	}
	if got := balanceOf(t, g.data, "kiosk"); got != 600_000_000 {
		t.Fatalf("kiosk after a refused top-up: %d nanos; want 600000000", got)
	}
	if body := topUp(consoleToken); !strings.Contains(body, "topped up 1.25 EUR") {
		t.Errorf("top-up with the token answered %q", body)
	}
	if got := balanceOf(t, g.data, "kiosk"); got != 1_850_000_000 {
		t.Fatalf("kiosk after the top-up: %d nanos; want 1850000000", got)
	}
	// An adjustment through the page: a debit with its reason, note and
	// the voucher it settles, in the audit log with the console's token.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"accounts/kiosk"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="amount"]`), "-0.25 EUR"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="reason"]`), "double_redemption"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="voucher"]`), "V-77"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="note"]`), "redeemed at two sites"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="ref"]`), "FIX-1"),
		chromedp.SetValue(chromedp.CSS(`#adjust input[name="token"]`), consoleToken)); err != nil {
		t.Fatalf("adjustment form: %v", err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`#adjust button`))); err != nil {
		t.Fatalf("adjustment: %v", err)
	}
	if body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body"))); !strings.Contains(body, "adjusted by -0.25 EUR (double_redemption") {
		t.Errorf("adjustment answered %q", body)
	}
	if got := balanceOf(t, g.data, "kiosk"); got != 1_600_000_000 {
		t.Fatalf("kiosk after the adjustment: %d nanos; want 1600000000", got)
	}

	// A release through the quarantine page, refused without the token
	// (a form posted without one, as another page could), done with it.
	form := url.Values{"note": {"checked on site"}}
	resp, err := http.PostForm(fmt.Sprintf("%squarantine/meter-1/%d/release", base, held.Seq), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || holdState(t, g.data, "meter-1", held.Seq) != protocol.HoldHeld {
		t.Fatalf("release without the token: %s; want 401 and the ticket still held", resp.Status)
	}
	release := fmt.Sprintf(`form[action$="/meter-1/%d/release"]`, held.Seq)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"quarantine"),
		chromedp.SetValue(chromedp.CSS(release+` input[name="token"]`), consoleToken)); err != nil {
		t.Fatalf("release form: %v", err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(release+" button"))); err != nil {
		t.Fatalf("release: %v", err)
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".flash")))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("meter-1/%d released", held.Seq); flash != want || holdState(t, g.data, "meter-1", held.Seq) != protocol.HoldReleased {
		t.Errorf("release: flash %q, hold %s; want %q and released", flash, holdState(t, g.data, "meter-1", held.Seq), want)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the pages reported errors: %q", p)
	}

	// A form another site posts is refused even with the right token: the
	// browser says where it came from (Origin, Sec-Fetch-Site).
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><html><body><form id="f" method="post" action="%saccounts/kiosk/topup">
<input name="amount" value="5.00 EUR"><input name="ref" value="EVIL-1"><input name="token" value="%s"></form>
<script>document.getElementById("f").submit();</script></body></html>`, base, consoleToken)
	}))
	defer other.Close()
	before := balanceOf(t, g.data, "kiosk")
	if err := chromedp.Do(ctx, chromedp.Navigate(other.URL), chromedp.WaitVisible(chromedp.CSS(".problem"))); err != nil {
		t.Fatalf("the cross-site form: %v", err)
	}
	if body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body"))); !strings.Contains(body, "not another site's") {
		t.Errorf("a cross-site post with the token answered %q", body)
	}
	if got := balanceOf(t, g.data, "kiosk"); got != before {
		t.Fatalf("a cross-site post moved the kiosk's balance: %d → %d", before, got)
	}

	// A page asked for under another host name (DNS rebinding) is refused.
	req, _ := http.NewRequest("GET", base, nil)
	req.Host = "console.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("Host console.example: %v %v; want 403", resp.Status, err)
	} else {
		resp.Body.Close()
	}
	if rep := inspect(t, g.data); !rep.Reconcile.Balanced {
		t.Errorf("books do not balance after the console's changes: %+v", rep.Reconcile)
	}
}

// balanceOf reads an account's balance through the operator API.
func balanceOf(t *testing.T, data, account string) int64 {
	t.Helper()
	resp, err := operatorGet(data, "/accounts/"+account)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a ledger.AccountView
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return int64(a.Balance)
}

// holdState reads a held ticket's state through the operator API.
func holdState(t *testing.T, data, device string, seq uint64) string {
	t.Helper()
	resp, err := operatorGet(data, fmt.Sprintf("/holds/%s/%d", device, seq))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h ledger.Held
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.State
}
