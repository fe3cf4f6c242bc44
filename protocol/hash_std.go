//go:build !tinygo

package protocol

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"hash"
)

// The hashes of the protocol, from the standard library: what the gateway
// and every Linux-class program use. TinyGo builds use hash_tiny.go.

const hashSize = sha256.Size

func newSHA256() hash.Hash { return sha256.New() }

func newHMAC(key []byte) hash.Hash { return hmac.New(sha256.New, key) }

func equalMAC(a, b []byte) bool { return hmac.Equal(a, b) }

// hkdfKey is HKDF-SHA256 (RFC 5869) with no salt, 32 bytes out.
func hkdfKey(secret []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, info, 32)
	if err != nil {
		panic("protocol: HKDF of 32 bytes cannot fail: " + err.Error())
	}
	return k
}

func sum256(b []byte) [hashSize]byte { return sha256.Sum256(b) }

// keepDetail keeps an error's detail text; firmware builds drop it
// (hash_tiny.go), keeping the reason code, to save the flash the texts
// take.
func keepDetail(s string) string { return s }
