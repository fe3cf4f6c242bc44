// Package softhsm makes SoftHSM2 tokens for tests: each in a directory
// of its own, initialised with softhsm2-util (Debian's softhsm2), so a
// test holds a real PKCS#11 token without touching the machine's.
package softhsm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Module is Debian's SoftHSM2 PKCS#11 library.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token is an initialised token.
type Token struct {
	Label   string
	Conf    string // its SOFTHSM2_CONF: a process that loads Module needs it in its environment
	PIN     string // the user PIN
	PINFile string // the PIN in a 0600 file
}

// New initialises a token labelled label under dir.
func New(dir, label string) (*Token, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, err
	}
	t := &Token{Label: label, Conf: filepath.Join(dir, "softhsm2.conf"), PIN: "4711-farthing", PINFile: filepath.Join(dir, "pin")}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(t.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(t.PINFile, []byte(t.PIN+"\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "0000-farthing", "--pin", t.PIN)
	cmd.Env = append(os.Environ(), t.Env())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return t, nil
}

// Env is the environment entry that points SoftHSM2 at the token.
func (t *Token) Env() string { return "SOFTHSM2_CONF=" + t.Conf }
