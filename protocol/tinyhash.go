package protocol

import "github.com/farthing-iot/farthing/protocol/internal/tinysha"

// HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) on tinysha, for
// firmware builds (hash_tiny.go). They are compiled in every build so that
// the tests check them against the standard library's.

// tinyHMAC is HMAC-SHA256 on tinysha; it implements hash.Hash.
type tinyHMAC struct {
	inner, outer tinysha.Digest
	ipad, opad   [tinysha.BlockSize]byte
}

func newTinyHMAC(key []byte) *tinyHMAC {
	h := new(tinyHMAC)
	var k [tinysha.BlockSize]byte
	if len(key) > tinysha.BlockSize {
		s := tinysha.Sum256(key)
		copy(k[:], s[:])
	} else {
		copy(k[:], key)
	}
	for i := range k {
		h.ipad[i] = k[i] ^ 0x36
		h.opad[i] = k[i] ^ 0x5c
	}
	h.Reset()
	return h
}

func (h *tinyHMAC) Reset() {
	h.inner.Reset()
	h.inner.Write(h.ipad[:])
}

func (h *tinyHMAC) Write(p []byte) (int, error) { return h.inner.Write(p) }

func (h *tinyHMAC) Sum(dst []byte) []byte {
	var in [tinysha.Size]byte
	h.inner.Sum(in[:0])
	h.outer.Reset()
	h.outer.Write(h.opad[:])
	h.outer.Write(in[:])
	return h.outer.Sum(dst)
}

func (h *tinyHMAC) Size() int      { return tinysha.Size }
func (h *tinyHMAC) BlockSize() int { return tinysha.BlockSize }

// tinyEqual compares two MACs in time that depends only on their length.
func tinyEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// tinyHKDF is HKDF-SHA256 with no salt and 32 bytes of output: PRK =
// HMAC(zeros, secret), OKM = HMAC(PRK, info || 0x01).
func tinyHKDF(secret []byte, info string) []byte {
	var zero [tinysha.Size]byte
	ext := newTinyHMAC(zero[:])
	ext.Write(secret)
	var prk [tinysha.Size]byte
	ext.Sum(prk[:0])
	exp := newTinyHMAC(prk[:])
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(make([]byte, 0, tinysha.Size))
}
