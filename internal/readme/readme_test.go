package readme

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipMark opens the comment that keeps the next block out of the run.
const skipMark = "<!-- README test: not run:"

// block is one shell block of the README.
type block struct {
	page string // the document it is in
	line int    // of its opening fence
	text string
}

// shellBlocks returns the README's ```sh blocks that are run, in order,
// and how many were skipped; a skip comment that gives no reason fails.
func shellBlocks(t *testing.T, path string) ([]block, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []block
	skipped := 0
	sc := bufio.NewScanner(f)
	var prev string
	var cur *block
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(l, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += l + "\n"
		case l == "```sh":
			if reason, ok := strings.CutPrefix(prev, skipMark); ok {
				if strings.TrimSpace(strings.TrimSuffix(reason, "-->")) == "" {
					t.Fatalf("%s:%d: a skipped block must say why", path, n-1)
				}
				skipped++
				// Consume the block without running it.
				for sc.Scan() && !strings.HasPrefix(sc.Text(), "```") {
					n++
				}
				n++
				continue
			}
			cur = &block{line: n}
		}
		prev = l
	}
	if cur != nil {
		t.Fatalf("%s:%d: a block that is never closed", path, cur.line)
	}
	return out, skipped
}

// copyTree copies the files of the tree (git's view of it when there is
// one: tracked and untracked but not ignored) into a temporary directory.
func copyTree(t *testing.T, root string) string {
	t.Helper()
	dst := t.TempDir()
	var files []string
	if out, err := exec.Command("git", "-C", root, "ls-files", "--cached", "--others", "--exclude-standard").Output(); err == nil {
		files = strings.Split(strings.TrimSpace(string(out)), "\n")
	} else {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				files = append(files, rel)
			}
			return nil
		})
	}
	for _, f := range files {
		src := filepath.Join(root, f)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(dst, f), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// pages are the documents whose shell blocks run, in this order, in one
// shell: the README's quickstart leaves a gateway running that the
// operating page goes on with.
var pages = []string{
	"README.md",
	"docs/concepts.md",
	"docs/operating.md",
	"docs/firmware.md",
	"docs/providers.md",
	"docs/reference/config.md",
	"docs/reference/cli.md",
	"docs/reference/metrics.md",
	"docs/reference/reasons.md",
	"docs/runbooks.md",
	"docs/performance.md",
	"docs/ARCHITECTURE.md",
}

// docPages returns pages, and fails if a Markdown page of docs/ is not
// among them (its commands would never run).
func docPages(t *testing.T, root string) []string {
	t.Helper()
	listed := map[string]bool{}
	for _, p := range pages {
		listed[p] = true
	}
	filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, _ := filepath.Rel(root, p)
			if !listed[rel] {
				t.Errorf("%s is not in the pages the README test runs", rel)
			}
		}
		return nil
	})
	return pages
}

// TestREADME runs the README's shell blocks in order in one bash, with
// errexit and pipefail, in a copy of the tree, and checks what the
// commands say: the demo and the gateway's books balance, the CoAP
// ticket made by hand is accepted, the daemon stops cleanly.
func TestREADME(t *testing.T) {
	if _, err := exec.LookPath("coap-client-openssl"); err != nil {
		t.Fatal("coap-client-openssl is not installed: the README's test command installs it (libcoap3-bin)")
	}
	root, _ := filepath.Abs("../..")
	var blocks []block
	skipped := 0
	for _, p := range docPages(t, root) {
		bs, n := shellBlocks(t, filepath.Join(root, p))
		for i := range bs {
			bs[i].page = p
		}
		blocks, skipped = append(blocks, bs...), skipped+n
	}
	if len(blocks) < 10 {
		t.Fatalf("only %d shell blocks found in the README and docs/", len(blocks))
	}
	dir := copyTree(t, root)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		fmt.Fprintf(&script, "echo '::: block %d, %s:%d' >&2\n%s", i+1, b.page, b.line, b.text)
	}
	script.WriteString("echo '::: README done' >&2\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // a daemon left by a block that failed
	}
	text := string(out)
	if err != nil {
		lines := strings.Split(text, "\n")
		log, _ := os.ReadFile(filepath.Join(dir, "farthingd.log"))
		t.Fatalf("the README's commands failed: %v\n...\n%s\nfarthingd.log:\n%s", err, strings.Join(lines[max(0, len(lines)-80):], "\n"), tail(string(log), 30))
	}
	t.Logf("%d blocks run, %d skipped, in %v", len(blocks), skipped, time.Since(start).Round(time.Second))
	for _, want := range []string{
		"BALANCED: every nano is accounted for", // the demo
		`"balanced": true`,                      // farthing inspect of the quickstart's gateway
		`"status": "accepted"`,                  // the receipt of the CoAP ticket made by hand
		"ok: ticket device plug-1 seq 1",        // farthing verify
		"::: README done",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the README's commands did not print %q:\n%s", want, tail(text, 80))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
