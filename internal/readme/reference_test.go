package readme

import (
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/protocol"
)

// section returns the README's text under the heading h, to the next
// heading of its level or above.
func section(t *testing.T, h string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+h+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", h)
	}
	s = s[i+len(h)+2:]
	if j := regexp.MustCompile(`\n#{2,3} `).FindStringIndex(s); j != nil {
		s = s[:j[0]]
	}
	return s
}

// TestReferenceListsEveryMetric: the README's metrics table has every
// farthing_* metric the gateway registers, and no other.
func TestReferenceListsEveryMetric(t *testing.T) {
	ref := section(t, "### Metrics")
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
				t.Errorf("README's metrics table lacks %s", name)
			}
		}
	}
	for _, m := range regexp.MustCompile("\\| `(farthing_[a-z_]+)` \\|").FindAllStringSubmatch(ref, -1) {
		if !have[m[1]] {
			t.Errorf("README's metrics table lists %s, which the gateway does not register", m[1])
		}
	}
}

// TestReferenceListsEveryReason: the README's reason codes table has every
// reason with its code.
func TestReferenceListsEveryReason(t *testing.T) {
	ref := section(t, "### Reason codes")
	for _, r := range protocol.Reasons() {
		if r == protocol.ReasonNone {
			continue
		}
		row := "| " + strconv.Itoa(int(r)) + " | `" + r.String() + "` |"
		if !strings.Contains(ref, row) {
			t.Errorf("README's reason codes lack %q", row)
		}
	}
	for s := protocol.Status(0); s.Valid(); s++ {
		if !strings.Contains(ref, "`"+s.String()+"` ("+strconv.Itoa(int(s))+")") {
			t.Errorf("README's reason codes lack the status %s (%d)", s, s)
		}
	}
}
