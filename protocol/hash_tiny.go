//go:build tinygo

package protocol

import (
	"hash"

	"github.com/farthing-iot/farthing/protocol/internal/tinysha"
)

// The hashes of the protocol in a firmware build: SHA-256, HMAC and HKDF
// on tinysha, a few kilobytes of flash where TinyGo's crypto/sha256,
// crypto/hmac and crypto/hkdf take tens. tinysha is proven equal to
// crypto/sha256 by its tests; HMAC and HKDF here follow RFC 2104 and RFC
// 5869 and are checked against the standard library's by
// TestTinyHashesEqualTheStandardOnes (which builds this file without the
// tag's help: see tinyhash_test.go).

const hashSize = tinysha.Size

func newSHA256() hash.Hash {
	d := new(tinysha.Digest)
	d.Reset()
	return d
}

func newHMAC(key []byte) hash.Hash { return newTinyHMAC(key) }

func equalMAC(a, b []byte) bool { return tinyEqual(a, b) }

func hkdfKey(secret []byte, info string) []byte { return tinyHKDF(secret, info) }

func sum256(b []byte) [hashSize]byte { return tinysha.Sum256(b) }

// keepDetail drops an error's detail text in a firmware build: the reason
// code says what was refused, and the texts would take flash.
func keepDetail(string) string { return "" }
