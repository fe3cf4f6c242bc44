package gateway_test

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// TestStatePlateaus runs a gateway whose upstream confirms at once, with
// short horizons (200 ms windows, 300 ms edge retention): as tickets keep
// coming, the bytes the state file uses level off instead of growing with
// history; the books still reconcile to the nano, counting what was
// pruned; and a pruned ticket is still proved from the audit sink's files.
func TestStatePlateaus(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer up.Close()
	auditDir := t.TempDir()
	const devices = 20
	var specs []devSpec
	for i := range devices {
		specs = append(specs, devSpec{plug(i), "hmac", "fleet"})
	}
	tg := startGateway(t, specs, func(c *gateway.Config) {
		c.DTLS.Listen = "off"
		c.Providers = []gateway.ProviderConfig{{ID: "utility", Window: 200 * time.Millisecond}}
		c.Upstreams = []gateway.UpstreamConfig{{Name: "h", Type: "http", URL: up.URL}}
		c.Forward = gateway.ForwardSettings{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
		c.Limits.AuditRetention = 300 * time.Millisecond
		c.Audit = gateway.AuditConfig{Sink: "files", Dir: auditDir, Rotate: time.Hour}
	})
	var sent uint64 = 1
	var rep *ledger.Report
	// settle waits until windows sealed, the upstream confirmed and
	// housekeeping pruned everything past the horizon: only the baselines
	// and what the last windows hold are kept. The bytes in use are read
	// then, so every round is measured in the same state, however busy the
	// machine.
	settle := func() {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var err error
			if rep, err = tg.Books().Inspect(nil); err != nil {
				t.Fatal(err)
			}
			kept := 0
			for _, d := range rep.Devices {
				kept += d.Accepted
			}
			if kept <= devices*5 { // the baselines, and what the last windows still hold
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d ticket records are still kept of %d, long past the horizon", kept, devices*(sent-1))
			}
		}
	}
	round := func(n uint64) int64 {
		submitMany(t, tg, devices, sent, n)
		sent += n
		settle()
		return tg.Store().Usage().InUse()
	}
	first := round(400)
	var last int64
	for range 3 {
		last = round(400)
	}
	// Without pruning the file would hold four times what it held after
	// the first round — 32,000 tickets at about 410 bytes each, some 13
	// MB; with it, what is within the horizon, once the ledger entries
	// are folded too (a few thousand a second, later than the tickets on
	// a busy machine). The bytes in use move with page splits and with
	// when pruning last ran (0.5 to 2 MB here under load), so the state
	// file has grown with history only if it more than doubled and passed
	// a third of the unpruned size.
	const grown = 4 << 20
	for deadline := time.Now().Add(40 * time.Second); last > 2*first && last > grown && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		last = tg.Store().Usage().InUse()
	}
	t.Logf("bytes in use after 8,000 tickets: %d; after 32,000: %d", first, last)
	if last > 2*first && last > grown {
		t.Errorf("the state file grew with history: %d bytes in use after 8,000 tickets, %d after 32,000", first, last)
	}
	rc := rep.Reconcile
	if !rc.Balanced || rc.Tickets != devices*(sent-1) || rc.ReceiptsCharged != rc.LedgerCharged {
		t.Fatalf("reconcile after pruning: %+v (sent %d)", rc, devices*(sent-1))
	}
	if _, raw, ok := tg.Books().StoredTicket(plug(3), 10); ok || raw != nil {
		t.Fatal("an old ticket is still in the state file")
	}
	days, _ := tg.Books().FoldedDays("fleet")
	if len(days) == 0 || days[0].Entries == 0 {
		t.Errorf("no ledger entries were folded: %+v", days)
	}
	code, body := getBody(t, socketClient(filepath.Join(tg.cfg.DataDir, operator.Socket)), "http://farthingd/accounts/fleet/periods")
	var periods []ledger.FoldedDay
	if json.Unmarshal([]byte(body), &periods); code != 200 || len(periods) != len(days) || periods[0] != days[0] {
		t.Errorf("GET /accounts/fleet/periods: %d %s", code, body)
	}
	// The pruned ticket is proved from the audit files.
	files, _ := filepath.Glob(filepath.Join(auditDir, "audit-*.jsonl"))
	if len(files) == 0 {
		t.Fatal("no audit files")
	}
	found := false
	for _, name := range files {
		f, _ := os.Open(name)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
		for sc.Scan() && !found {
			var b ledger.AuditBundle
			if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
				t.Fatal(err)
			}
			raw, _ := hex.DecodeString(b.Aggregate)
			_, agg, err := strict.DecodeAggregate(raw)
			if err != nil {
				t.Fatalf("bundle %d: %v", b.Seq, err)
			}
			p, ok, err := ledger.ProveFromBundle(b, agg, plug(3)+"/10")
			if err != nil {
				t.Fatal(err)
			}
			found = ok && p.Aggregate == b.Seq
		}
		f.Close()
	}
	if !found {
		t.Error("the pruned ticket is in no audit bundle")
	}
}

func plug(i int) string { return "plug-" + string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// TestStoreWarningLevel: above limits.warn_store_bytes the gateway says so
// in its log and on /metrics, before the hard bound refuses anything.
func TestStoreWarningLevel(t *testing.T) {
	tg := startGateway(t, []devSpec{{"plug-00", "hmac", "fleet"}}, func(c *gateway.Config) {
		c.DTLS.Listen = "off"
		c.Limits.WarnStoreBytes = 1
	})
	submitMany(t, tg, 1, 1, 3) // still accepted: only a warning
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, m := httpGet(t, "http://"+tg.HTTPAddr()+"/metrics")
		if strings.Contains(m, "farthing_store_warning 1") && strings.Contains(m, "farthing_store_inuse_bytes") &&
			strings.Contains(m, "farthing_disk_free_bytes") && strings.Contains(tg.logs.String(), "state file above its warning level") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning after 10s; log:\n%s", tg.logs.String())
		}
	}
}
