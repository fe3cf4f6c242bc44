package readme

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/protocol"
)

// section returns the text of the reference page (under docs/reference/)
// from its heading h to the next heading.
func section(t *testing.T, page, h string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../docs/reference", page))
	if err != nil {
		t.Fatal(err)
	}
	s := "\n" + string(b)
	i := strings.Index(s, "\n"+h+"\n")
	if i < 0 {
		t.Fatalf("docs/reference/%s has no %q", page, h)
	}
	s = s[i+len(h)+2:]
	if j := regexp.MustCompile(`\n#{1,3} `).FindStringIndex(s); j != nil {
		s = s[:j[0]]
	}
	return s
}

// TestReferenceListsEveryMetric: the the metrics reference has every
// farthing_* metric the gateway registers, and no other.
func TestReferenceListsEveryMetric(t *testing.T) {
	ref := section(t, "metrics.md", "# Metrics")
	// Every metric the gateway defines, labelled or not, by its
	// descriptor (a vector with no series yet is not gathered).
	have := map[string]bool{}
	m := reflect.ValueOf(gateway.NewMetrics()).Elem()
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for i := range m.NumField() {
		c, ok := m.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if f := fqName.FindStringSubmatch(d.String()); f != nil {
				have[f[1]] = true
			}
		}
	}
	if len(have) < 10 {
		t.Fatalf("found only %d metrics: %v", len(have), have)
	}
	for name := range have {
		if strings.HasPrefix(name, "farthing_") {
			have[name] = true
			if !strings.Contains(ref, "| `"+name+"` |") {
				t.Errorf("the metrics reference lacks %s", name)
			}
		}
	}
	for _, m := range regexp.MustCompile("\\| `(farthing_[a-z_]+)` \\|").FindAllStringSubmatch(ref, -1) {
		if !have[m[1]] {
			t.Errorf("the metrics reference lists %s, which the gateway does not register", m[1])
		}
	}
}

// TestReferenceListsEveryReason: the the reason codes reference table has every
// reason with its code.
func TestReferenceListsEveryReason(t *testing.T) {
	ref := section(t, "reasons.md", "# Reason codes")
	for _, r := range protocol.Reasons() {
		if r == protocol.ReasonNone {
			continue
		}
		row := "| " + strconv.Itoa(int(r)) + " | `" + r.String() + "` |"
		if !strings.Contains(ref, row) {
			t.Errorf("the reason codes reference lack %q", row)
		}
	}
	for s := protocol.Status(0); s.Valid(); s++ {
		if !strings.Contains(ref, "`"+s.String()+"` ("+strconv.Itoa(int(s))+")") {
			t.Errorf("the reason codes reference lack the status %s (%d)", s, s)
		}
	}
}
