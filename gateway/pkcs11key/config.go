// Package pkcs11key keeps the gateway's Ed25519 signing key in a PKCS#11
// token (an HSM, a smart card, SoftHSM2): the key is made in the token,
// marked sensitive and not extractable, and every signature is made there
// (CKM_EDDSA); the gateway holds only a session and the public key.
//
// No well-kept Go PKCS#11 library speaks EdDSA (crypto11 does RSA and
// ECDSA), so this package uses the lowest maintained layer,
// github.com/miekg/pkcs11, with the PKCS#11 3.0 constants it lacks
// defined here. It needs cgo (the module is loaded with dlopen); a build
// without cgo refuses key_pkcs11 with ErrNoPKCS11.
package pkcs11key

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Config names a key in a token: `key_pkcs11` in farthingd.yaml.
type Config struct {
	// Module is the token's PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string `yaml:"module"`
	// Token is the token's label; Key the key pair's label (CKA_LABEL).
	Token string `yaml:"token_label"`
	Key   string `yaml:"key_label"`
	// PINFile holds the user PIN (mode 0600), or PINEnv names the
	// environment variable that holds it.
	PINFile string `yaml:"pin_file"`
	PINEnv  string `yaml:"pin_env"`
}

// Errors.
var (
	// ErrNoPKCS11: this build has no PKCS#11 support (built without cgo).
	ErrNoPKCS11 = errors.New("pkcs11key: this build has no PKCS#11 support (it was built without cgo)")
	// ErrNoKey: the token or the key is not there.
	ErrNoKey = errors.New("pkcs11key: no such token or key")
)

// Validate checks that c names a module, a token, a key and a PIN.
func (c Config) Validate() error {
	switch {
	case c.Module == "" || c.Token == "" || c.Key == "":
		return errors.New("key_pkcs11 needs module, token_label and key_label")
	case (c.PINFile == "") == (c.PINEnv == ""):
		return errors.New("key_pkcs11 needs pin_file or pin_env, one of them")
	}
	return nil
}

// pin reads the user PIN: from its file, which must be mode 0600, or its
// environment variable.
func (c Config) pin() (string, error) {
	if c.PINEnv != "" {
		p := os.Getenv(c.PINEnv)
		if p == "" {
			return "", fmt.Errorf("key_pkcs11: the environment variable %s is empty", c.PINEnv)
		}
		return p, nil
	}
	fi, err := os.Stat(c.PINFile)
	if err != nil {
		return "", fmt.Errorf("key_pkcs11: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("key_pkcs11: pin_file %s is mode %v: a secret must be 0600", c.PINFile, fi.Mode().Perm())
	}
	b, err := os.ReadFile(c.PINFile)
	if err != nil {
		return "", fmt.Errorf("key_pkcs11: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
