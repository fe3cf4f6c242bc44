package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.yaml.in/yaml/v3"
)

// The alert rules, recording rules and dashboards of monitoring/, held to
// what the daemon and the receiver really expose.

const monitoringDir = "../../monitoring"

// TestAlertRules: promtool checks the rules and runs their unit tests (a
// case that fires and one that does not for every alert), and every
// alert has a severity, a summary and a runbook that docs/runbooks.md has.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed; scripts/test.sh installs it (Debian's prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(monitoringDir, "recording.yml"), filepath.Join(monitoringDir, "alerts.yml")},
		{"test", "rules", filepath.Join(monitoringDir, "tests", "alerts_test.yml")},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	runbooks, err := os.ReadFile("../../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	tested, _ := os.ReadFile(filepath.Join(monitoringDir, "tests", "alerts_test.yml"))
	n := 0
	for _, r := range rules(t) {
		if r.Alert == "" {
			continue
		}
		n++
		sev, summary, url := r.Labels["severity"], r.Annotations["summary"], r.Annotations["runbook_url"]
		anchor := "## " + r.Alert + "\n"
		if sev == "" || summary == "" || !strings.HasSuffix(url, "docs/runbooks.md#"+strings.ToLower(r.Alert)) || !strings.Contains(string(runbooks), anchor) {
			t.Errorf("alert %s: severity %q, summary %q, runbook %q (and docs/runbooks.md needs %q)", r.Alert, sev, summary, url, anchor)
		}
		if !strings.Contains(string(tested), "alertname: "+r.Alert+"\n") {
			t.Errorf("alert %s has no promtool test case", r.Alert)
		}
	}
	if n < 15 {
		t.Fatalf("only %d alerts", n)
	}
}

// rule is one alerting or recording rule.
type rule struct {
	Alert, Record, Expr string
	Labels, Annotations map[string]string
}

// rules reads every rule of monitoring/.
func rules(t *testing.T) []rule {
	t.Helper()
	var out []rule
	for _, f := range []string{"recording.yml", "alerts.yml"} {
		b, err := os.ReadFile(filepath.Join(monitoringDir, f))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct{ Rules []rule }
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range doc.Groups {
			out = append(out, g.Rules...)
		}
	}
	return out
}

// dashboardQueries parses every dashboard and returns its queries,
// failing on a dashboard without the data source variable or a panel
// without it or without a query.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(monitoringDir, "dashboards", "*.json"))
	if len(files) < 5 {
		t.Fatalf("only %d dashboards", len(files))
	}
	out := map[string][]string{}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var d struct {
			UID        string
			Templating struct{ List []struct{ Name, Type string } }
			Panels     []struct {
				Title      string
				Datasource struct{ UID string }
				Targets    []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		hasDS := false
		for _, v := range d.Templating.List {
			hasDS = hasDS || v.Name == "datasource" && v.Type == "datasource"
		}
		if !hasDS || d.UID == "" || len(d.Panels) < 4 {
			t.Errorf("%s: uid %q, %d panels, data source variable %v", f, d.UID, len(d.Panels), hasDS)
		}
		for _, p := range d.Panels {
			if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s: panel %q: data source %q, %d queries", f, p.Title, p.Datasource.UID, len(p.Targets))
			}
			for _, q := range p.Targets {
				out[filepath.Base(f)+": "+p.Title] = append(out[filepath.Base(f)+": "+p.Title], q.Expr)
			}
		}
	}
	return out
}

// TestMonitoringNamesRealMetrics: every metric a rule or a dashboard
// panel names is on a running farthingd's /metrics or a running
// receiver's (after a little traffic), or is a recording rule's; every
// recording rule a query uses is defined.
func TestMonitoringNamesRealMetrics(t *testing.T) {
	t.Parallel()
	have := scrapeDaemonAndReceiver(t)
	recorded := map[string]bool{}
	queries := map[string][]string{}
	for _, r := range rules(t) {
		if r.Record != "" {
			recorded[r.Record] = true
		}
		queries["rule "+r.Alert+r.Record] = append(queries["rule "+r.Alert+r.Record], r.Expr)
	}
	for where, qs := range dashboardQueries(t) {
		queries[where] = append(queries[where], qs...)
	}
	names := regexp.MustCompile(`\bfarthing[_:][a-z0-9_:]+`)
	checked := 0
	for where, qs := range queries {
		for _, q := range qs {
			for _, name := range names.FindAllString(q, -1) {
				checked++
				switch {
				case strings.Contains(name, ":"):
					if !recorded[name] {
						t.Errorf("%s names %s, which no recording rule records", where, name)
					}
				case !have[name]:
					t.Errorf("%s names %s, which neither the daemon's nor the receiver's /metrics has", where, name)
				}
			}
		}
	}
	if checked < 60 {
		t.Fatalf("only %d metric names checked", checked)
	}
}

// scrapeDaemonAndReceiver runs a farthingd with a device and a receiver
// with its metrics listener, sends a few tickets and a refused MQTT
// login, and returns every metric name both expose (a histogram's
// _bucket, _sum and _count under its own name too).
func scrapeDaemonAndReceiver(t *testing.T) map[string]bool {
	t.Helper()
	bin := buildDaemon(t)
	g := newGatewayDir(t, []string{"plug-1"}, "", "")
	d := startDaemon(t, bin, g.config, g.mqtt)
	defer d.stop(t)
	pub, _ := makeGatewayKey(t, t.TempDir())
	metrics := freeAddr(t, "tcp")
	startReceiverOn(t, freeAddr(t, "tcp"), []string{"--metrics", metrics}, pub)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := dialDevice(ctx, g, "plug-1")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for range 3 {
		dev.report(t)
	}
	rawMQTT(g, "plug-1", "plug-1-bad", func(o *paho.ClientOptions) { o.SetPassword("wrong") }, nil) // a refused login
	have := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !have["farthing_windows_sealed_total"] && time.Now().Before(deadline) { // the 1 s window seals
		time.Sleep(300 * time.Millisecond)
		have = map[string]bool{}
		for _, url := range []string{"http://" + g.http + "/metrics", "http://" + metrics + "/metrics"} {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if l == "" || l[0] == '#' {
					continue
				}
				name := strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]
				have[name] = true
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					have[strings.TrimSuffix(name, s)] = true
				}
			}
		}
	}
	return have
}
