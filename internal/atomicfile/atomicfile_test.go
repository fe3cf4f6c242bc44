package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// Write replaces the file whole, with its mode, and leaves no temporary
// file beside it.
func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	for _, v := range []string{"one", "two"} {
		if err := Write(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if err != nil || string(b) != v || fi.Mode().Perm() != 0o600 {
			t.Fatalf("after writing %q: %q, %v, mode %v", v, b, err, fi.Mode().Perm())
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("%d files in the directory; want the one", len(es))
	}
}
