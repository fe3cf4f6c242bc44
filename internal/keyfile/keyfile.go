// Package keyfile reads and writes Farthing's key files, all PEM:
//
//   - "PRIVATE KEY": an Ed25519 private key in PKCS #8 (RFC 8410), readable
//     by OpenSSL; a device's ticket signing key or the gateway's key;
//   - "PUBLIC KEY": an Ed25519 public key in PKIX (RFC 8410);
//   - "FARTHING MASTER SECRET": a device's 32-byte master secret, from which
//     its ticket MAC key, receipt MAC key, DTLS PSK and MQTT password are
//     derived (protocol.DeriveKey).
//
// Secret files are written with mode 0600 and never overwritten.
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// PEM block types.
const (
	TypePrivate = "PRIVATE KEY"
	TypePublic  = "PUBLIC KEY"
	TypeMaster  = "FARTHING MASTER SECRET"
)

// MaxFileSize bounds a key file read; key files are a few hundred bytes.
const MaxFileSize = 16 << 10

// ErrNotAKey is returned for a file that holds no Farthing key.
var ErrNotAKey = errors.New("keyfile: not a Farthing key file (want PEM PRIVATE KEY, PUBLIC KEY or FARTHING MASTER SECRET)")

// Key is the content of one key file: exactly one of the fields is set.
type Key struct {
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
	Master  []byte
}

// Kind names what the key is, for messages.
func (k *Key) Kind() string {
	switch {
	case k.Private != nil:
		return "ed25519 private key"
	case k.Public != nil:
		return "ed25519 public key"
	default:
		return "hmac master secret"
	}
}

// Signer returns the signer for a message of kind made with this key: the
// Ed25519 key, or the HMAC key derived from the master secret for tickets
// (protocol.PurposeTicket) or receipts (protocol.PurposeReceipt).
func (k *Key) Signer(kind protocol.Kind) (protocol.Signer, error) {
	switch {
	case k.Private != nil:
		return protocol.NewEd25519Signer(k.Private)
	case k.Master != nil:
		return k.hmac(kind)
	}
	return nil, errors.New("keyfile: a public key cannot sign")
}

// Verifier returns the verifier for a message of kind: the Ed25519 public
// key (also of a private key file), or the derived HMAC key.
func (k *Key) Verifier(kind protocol.Kind) (protocol.Verifier, error) {
	switch {
	case k.Private != nil:
		return strict.NewEd25519Verifier(k.Private.Public().(ed25519.PublicKey))
	case k.Public != nil:
		return strict.NewEd25519Verifier(k.Public)
	}
	return k.hmac(kind)
}

func (k *Key) hmac(kind protocol.Kind) (*protocol.HMAC, error) {
	purpose := protocol.PurposeTicket
	switch kind {
	case protocol.KindReceipt:
		purpose = protocol.PurposeReceipt
	case protocol.KindAggregate:
		return nil, errors.New("keyfile: aggregates are signed with Ed25519, not an HMAC secret")
	}
	key, err := protocol.DeriveKey(k.Master, purpose)
	if err != nil {
		return nil, err
	}
	return protocol.NewHMAC(key)
}

// Parse reads the first PEM block of b.
func Parse(b []byte) (*Key, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, ErrNotAKey
	}
	switch block.Type {
	case TypePrivate:
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("keyfile: private key: %w", err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("keyfile: private key is a %T, not Ed25519", k)
		}
		return &Key{Private: priv}, nil
	case TypePublic:
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("keyfile: public key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("keyfile: public key is a %T, not Ed25519", k)
		}
		return &Key{Public: pub}, nil
	case TypeMaster:
		if len(block.Bytes) != protocol.MasterSecretSize {
			return nil, fmt.Errorf("keyfile: master secret is %d bytes, want %d", len(block.Bytes), protocol.MasterSecretSize)
		}
		return &Key{Master: block.Bytes}, nil
	}
	return nil, ErrNotAKey
}

// Load reads and parses a key file.
func Load(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, MaxFileSize+1)
	n, _ := f.Read(b)
	if n > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than a key file can be", path)
	}
	k, err := Parse(b[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// GenerateEd25519 makes a new Ed25519 key pair.
func GenerateEd25519() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Key{Private: priv}, nil
}

// GenerateMaster makes a new random master secret.
func GenerateMaster() (*Key, error) {
	m := make([]byte, protocol.MasterSecretSize)
	if _, err := rand.Read(m); err != nil {
		return nil, err
	}
	return &Key{Master: m}, nil
}

// EncodePrivate returns the PEM of the secret part (private key or master).
func (k *Key) EncodePrivate() ([]byte, error) {
	switch {
	case k.Private != nil:
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: TypePrivate, Bytes: der}), nil
	case k.Master != nil:
		return pem.EncodeToMemory(&pem.Block{Type: TypeMaster, Bytes: k.Master}), nil
	}
	return nil, errors.New("keyfile: no secret to encode")
}

// EncodePublic returns the PEM of the Ed25519 public key.
func (k *Key) EncodePublic() ([]byte, error) {
	pub := k.Public
	if k.Private != nil {
		pub = k.Private.Public().(ed25519.PublicKey)
	}
	if pub == nil {
		return nil, errors.New("keyfile: an HMAC secret has no public key")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: TypePublic, Bytes: der}), nil
}

// WriteNew writes data to path with mode perm, failing if path exists, and
// syncs it to disk.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
