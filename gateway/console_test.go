package gateway_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConsolePagesWithoutJavaScript reads every console page as a client
// without JavaScript would: each answers 200 with its figures in the
// HTML; the overview counts the tickets sent; a change without the
// operator token is refused, and so is a page asked for under a host name
// that is not loopback.
func TestConsolePagesWithoutJavaScript(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-00", "hmac", "fleet"}})
	submitMany(t, tg, 1, 1, 5)
	base := "http://" + tg.HTTPAddr() + "/console/"
	var overview string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var code int
		code, overview = httpGet(t, base)
		if code != http.StatusOK {
			t.Fatalf("overview: %d %s", code, overview)
		}
		if strings.Contains(overview, `id="rate-accepted-"`) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(overview, "the gateway&#39;s clock") || !strings.Contains(overview, `id="clock"`) {
		t.Errorf("the overview does not show the clock:\n%s", overview)
	}
	if !strings.Contains(overview, "(5 since start)") || !strings.Contains(overview, `<dd id="inspect-tickets">5</dd>`) {
		t.Fatalf("overview does not count the 5 tickets:\n%s", overview)
	}
	for page, want := range map[string]string{
		"devices":                   "plug-00",
		"devices?q=nothing-like-it": "0 device(s)",
		"devices/plug-00":           `<dd id="device-last-seq">5</dd>`,
		"accounts":                  "fleet",
		"accounts/fleet":            "Top up",
		"windows":                   "Open windows",
		"quarantine":                "0 ticket(s) held",
		"static/console.css":        "font",
		"static/console.js":         "EventSource",
	} {
		code, body := httpGet(t, base+page)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("%s: %d; want 200 with %q:\n%s", page, code, want, body)
		}
	}
	if code, _ := httpGet(t, base+"devices/no-such"); code != http.StatusNotFound {
		t.Errorf("an unknown device: %d; want 404", code)
	}
	resp, err := http.PostForm(base+"accounts/fleet/topup", url.Values{"amount": {"1.00 EUR"}, "ref": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a top-up without a token (none configured): %s; want 401", resp.Status)
	}
	req, _ := http.NewRequest("GET", base, nil)
	req.Host = "farthing.example:80"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("Host farthing.example: %v; want 403", err)
	} else {
		resp.Body.Close()
	}
}
