package layout

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxTracked is the largest file git may hold outside testdata/ and docs/:
// the repository keeps source, never build output.
const maxTracked = 1 << 20

// executableMagic are the first bytes of the binary formats a build
// writes: ELF, Mach-O (both byte orders, 32 and 64 bits, universal), PE
// and WebAssembly.
var executableMagic = [][]byte{
	{0x7f, 'E', 'L', 'F'},
	{0xfe, 0xed, 0xfa, 0xce}, {0xce, 0xfa, 0xed, 0xfe},
	{0xfe, 0xed, 0xfa, 0xcf}, {0xcf, 0xfa, 0xed, 0xfe},
	{0xca, 0xfe, 0xba, 0xbe},
	{'M', 'Z'},
	{0x00, 'a', 's', 'm'},
}

// TestTrackedFilesAreSource fails when git tracks a compiled program or a
// file over 1 MB outside testdata/ and docs/.
func TestTrackedFilesAreSource(t *testing.T) {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): nothing tracked to check", err)
	}
	top := strings.TrimSpace(string(root))
	out, err := exec.Command("git", "-C", top, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if problem := checkTracked(filepath.Join(top, name), name); problem != "" {
			t.Errorf("%s: %s", name, problem)
		}
	}
}

// checkTracked returns why a tracked file does not belong in git, or "".
func checkTracked(path, name string) string {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return "" // deleted in the work tree, or a symlink
	}
	exempt := strings.HasPrefix(name, "testdata/") || strings.Contains(name, "/testdata/") || strings.HasPrefix(name, "docs/")
	if fi.Size() > maxTracked && !exempt {
		return "larger than 1 MB outside testdata/ and docs/"
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.Read(head)
	for _, m := range executableMagic {
		if n >= len(m) && bytes.Equal(head[:len(m)], m) {
			return "a compiled executable (build output belongs in .gitignore)"
		}
	}
	return ""
}

// TestCheckTrackedCatchesBinaries keeps the check honest: a real binary
// and an oversized file are caught, a script is not.
func TestCheckTrackedCatchesBinaries(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if checkTracked(exe, "layout.test") == "" {
		t.Errorf("checkTracked(%s) passed a compiled test binary", exe)
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big.txt")
	if err := os.WriteFile(big, bytes.Repeat([]byte("a"), maxTracked+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if checkTracked(big, "big.txt") == "" {
		t.Error("a file over 1 MB at the top passed")
	}
	if p := checkTracked(big, "protocol/testdata/big.txt"); p != "" {
		t.Errorf("a large file under testdata/ was refused: %s", p)
	}
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p := checkTracked(script, "scripts/run.sh"); p != "" {
		t.Errorf("a shell script was refused: %s", p)
	}
}
