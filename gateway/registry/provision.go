package registry

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/farthing-iot/farthing/protocol"
)

// Secrets is what a provisioned device holds: its master secret and,
// for an Ed25519 device, its signing key.
type Secrets struct {
	Master  []byte
	Private ed25519.PrivateKey // nil for HMAC devices
}

// NewDevice makes the keys for a device and its registry entry.
func NewDevice(id, keyType, account, provider string, tariffs map[string]string) (Entry, Secrets, error) {
	var s Secrets
	s.Master = make([]byte, protocol.MasterSecretSize)
	if _, err := rand.Read(s.Master); err != nil {
		return Entry{}, s, err
	}
	e := Entry{ID: id, KeyType: keyType, Secret: hex.EncodeToString(s.Master), Account: account, Provider: provider, Tariffs: tariffs}
	switch keyType {
	case "hmac":
	case "ed25519":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return e, s, err
		}
		s.Private, e.PublicKey = priv, hex.EncodeToString(pub)
	default:
		return e, s, fmt.Errorf("%w: key type %q: want hmac or ed25519", ErrInvalid, keyType)
	}
	return e, s, nil
}

// Signer returns the device's ticket signer.
func (s Secrets) Signer() (protocol.Signer, error) {
	if s.Private != nil {
		return protocol.NewEd25519Signer(s.Private)
	}
	k, err := protocol.DeriveKey(s.Master, protocol.PurposeTicket)
	if err != nil {
		return nil, err
	}
	return protocol.NewHMAC(k)
}

// ReceiptVerifier returns the verifier of the device's receipts.
func (s Secrets) ReceiptVerifier() (*protocol.HMAC, error) {
	k, err := protocol.DeriveKey(s.Master, protocol.PurposeReceipt)
	if err != nil {
		return nil, err
	}
	return protocol.NewHMAC(k)
}

// MQTTPassword returns the device's MQTT password.
func (s Secrets) MQTTPassword() string {
	k, _ := protocol.DeriveKey(s.Master, protocol.PurposeMQTTPassword)
	return hex.EncodeToString(k)
}

// SecretsOf recovers a device's secrets from its registry entry (which
// holds them: the registry file is secret).
func SecretsOf(e Entry) (Secrets, error) {
	var s Secrets
	m, err := hex.DecodeString(e.Secret)
	if err != nil || len(m) != protocol.MasterSecretSize {
		return s, fmt.Errorf("%w: device %s: bad secret", ErrInvalid, e.ID)
	}
	s.Master = m
	return s, nil
}

// DTLSPSK returns the device's DTLS pre-shared key (its identity is its id).
func (s Secrets) DTLSPSK() []byte { return dtlsPSKOf(s.Master) }

// MarkRevoked marks revoked every device of f whose current key id is in
// revoked (raw key ids as strings): what control commands revoked, beside
// the file. An Ed25519 device's key id comes from its public key, so an
// entry without its secret (one shown to an operator) is marked too.
func MarkRevoked(f *File, revoked map[string]bool) {
	for i, e := range f.Devices {
		kid, _, err := KeyIDs(e)
		if pub, perr := hex.DecodeString(e.PublicKey); e.KeyType == "ed25519" && perr == nil {
			kid, err = protocol.KeyIDOf(protocol.AlgEdDSA, pub), nil
		}
		if err == nil && revoked[string(kid[:])] {
			f.Devices[i].Revoked = true
		}
	}
}
