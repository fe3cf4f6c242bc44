// Package vectors reads protocol/testdata/vectors.json, the test vectors
// that the device side (package protocol) and the gateway side (package
// strict) are both tested against, and that seed their fuzz tests.
package vectors

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/farthing-iot/farthing/protocol"
)

// File is the whole vectors file.
type File struct {
	Comment string `json:"comment"`
	// Keys are the test keys, hex: an Ed25519 seed and an HMAC 256/256 key.
	Keys    map[string]string `json:"keys"`
	Vectors []Vector          `json:"vectors"`
}

// Vector is one message. Valid vectors decode and verify; the others are
// refused with Reason (bad_signature: decodes, does not verify).
type Vector struct {
	Name      string              `json:"name"`
	Kind      string              `json:"kind"`
	Key       string              `json:"key"` // "ed25519" or "hmac"
	Valid     bool                `json:"valid"`
	Reason    string              `json:"reason,omitempty"`
	Ticket    *protocol.Ticket    `json:"ticket,omitempty"`
	Receipt   *protocol.Receipt   `json:"receipt,omitempty"`
	Aggregate *protocol.Aggregate `json:"aggregate,omitempty"`
	// A device's grant request or release (kinds 12 and 13).
	GrantRequest *protocol.GrantRequest `json:"grant_request,omitempty"`
	Release      *protocol.Release      `json:"release,omitempty"`
	// A provider's command (kind 14) and a gateway's acknowledgement (15).
	Command    *protocol.Command    `json:"command,omitempty"`
	CommandAck *protocol.CommandAck `json:"command_ack,omitempty"`
	Hex        string               `json:"hex"`
	Diag       string               `json:"diag"`
}

// Bytes returns the vector's message bytes.
func (v *Vector) Bytes() []byte {
	b, err := hex.DecodeString(v.Hex)
	if err != nil {
		panic(fmt.Sprintf("vector %s: bad hex: %v", v.Name, err))
	}
	return b
}

// Load reads a vectors file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// TestKeys returns the fixed test keys of the vectors.
func TestKeys() map[string]string {
	seed, mac := make([]byte, 32), make([]byte, 32)
	for i := range seed {
		seed[i], mac[i] = byte(i), byte(0x20+i)
	}
	return map[string]string{"ed25519-seed": hex.EncodeToString(seed), "hmac": hex.EncodeToString(mac)}
}

// Signer returns the signer for key name ("ed25519" or "hmac").
func (f *File) Signer(name string) (protocol.Signer, error) {
	switch name {
	case "ed25519":
		seed, err := hex.DecodeString(f.Keys["ed25519-seed"])
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("bad ed25519 seed")
		}
		return protocol.NewEd25519Signer(ed25519.NewKeyFromSeed(seed))
	case "hmac":
		k, err := hex.DecodeString(f.Keys["hmac"])
		if err != nil {
			return nil, err
		}
		return protocol.NewHMAC(k)
	}
	return nil, fmt.Errorf("unknown key %q", name)
}

// Verifier returns the verifier for key name.
func (f *File) Verifier(name string) (protocol.Verifier, error) {
	if name == "ed25519" {
		seed, err := hex.DecodeString(f.Keys["ed25519-seed"])
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("bad ed25519 seed")
		}
		return protocol.NewEd25519Verifier(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	}
	s, err := f.Signer(name)
	if err != nil {
		return nil, err
	}
	return s.(protocol.Verifier), nil
}
