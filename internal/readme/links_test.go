package readme

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#+ (.*)$`)
)

// anchorOf is the anchor a heading gets (GitHub's rule, for the headings
// these pages use).
func anchorOf(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			if r != '_' {
				b.WriteRune(r)
			}
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestDocLinks: every relative link of the README and the pages under
// docs/ names a file of the tree, and every #anchor a heading of its page.
func TestDocLinks(t *testing.T) {
	root, _ := filepath.Abs("../..")
	for _, page := range docPages(t, root) {
		b, err := os.ReadFile(filepath.Join(root, page))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			file := filepath.Join(root, page)
			if path != "" {
				file = filepath.Join(filepath.Dir(file), path)
				if _, err := os.Stat(file); err != nil {
					t.Errorf("%s: link %q: no such file", page, target)
					continue
				}
			}
			if frag == "" || !strings.HasSuffix(file, ".md") {
				continue
			}
			tb, _ := os.ReadFile(file)
			found := false
			for _, h := range mdHeading.FindAllStringSubmatch(string(tb), -1) {
				if anchorOf(h[1]) == frag {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: link %q: no heading with that anchor", page, target)
			}
		}
	}
}
