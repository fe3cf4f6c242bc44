// Package tinysha is a small SHA-256 (FIPS 180-4) for firmware: a few
// hundred bytes of code and 112 bytes of state, no tables but the round
// constants, no allocation. TinyGo builds of the device path use it in
// place of crypto/sha256, whose code is some tens of kilobytes under
// TinyGo; everything else (the gateway) keeps crypto/sha256. Its tests
// prove it equal to crypto/sha256 on the NIST vectors and by a
// differential fuzz test.
package tinysha

import "encoding/binary"

// Size is the size of a digest, BlockSize of a block, in bytes.
const (
	Size      = 32
	BlockSize = 64
)

var k = [64]uint32{
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

// Digest is a SHA-256 computation in progress. The zero value is not
// ready: call Reset.
type Digest struct {
	h   [8]uint32
	buf [BlockSize]byte
	n   int    // bytes in buf
	len uint64 // bytes written
}

// Reset starts a new digest.
func (d *Digest) Reset() {
	d.h = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
	d.n, d.len = 0, 0
}

// Write adds p to the digest; it never fails.
func (d *Digest) Write(p []byte) (int, error) {
	n := len(p)
	d.len += uint64(n)
	for len(p) > 0 {
		c := copy(d.buf[d.n:], p)
		d.n += c
		p = p[c:]
		if d.n == BlockSize {
			d.block()
			d.n = 0
		}
	}
	return n, nil
}

// Sum appends the digest of what was written to dst; the digest can go
// on being written to.
func (d *Digest) Sum(dst []byte) []byte {
	var out [Size]byte
	d.sum(&out)
	return append(dst, out[:]...)
}

// sum writes the digest into out without changing d.
func (d *Digest) sum(out *[Size]byte) {
	c := *d
	bits := c.len << 3
	c.buf[c.n] = 0x80
	c.n++
	if c.n > BlockSize-8 {
		clear(c.buf[c.n:])
		c.block()
		c.n = 0
	}
	clear(c.buf[c.n : BlockSize-8])
	binary.BigEndian.PutUint64(c.buf[BlockSize-8:], bits)
	c.block()
	for i, v := range c.h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
}

// Sum256 returns the SHA-256 digest of data.
func Sum256(data []byte) [Size]byte {
	var d Digest
	d.Reset()
	d.Write(data)
	var out [Size]byte
	d.sum(&out)
	return out
}

// Size returns Size; BlockSize returns BlockSize (hash.Hash).
func (d *Digest) Size() int      { return Size }
func (d *Digest) BlockSize() int { return BlockSize }

func rotr(x uint32, n uint) uint32 { return x>>n | x<<(32-n) }

// block compresses buf into h, with the message schedule kept as a
// rolling window of 16 words.
func (d *Digest) block() {
	var w [16]uint32
	for i := range w {
		w[i] = binary.BigEndian.Uint32(d.buf[4*i:])
	}
	a, b, c, dd, e, f, g, h := d.h[0], d.h[1], d.h[2], d.h[3], d.h[4], d.h[5], d.h[6], d.h[7]
	for i := 0; i < 64; i++ {
		if i >= 16 {
			w15, w2 := w[(i-15)&15], w[(i-2)&15]
			s0 := rotr(w15, 7) ^ rotr(w15, 18) ^ w15>>3
			s1 := rotr(w2, 17) ^ rotr(w2, 19) ^ w2>>10
			w[i&15] += s0 + w[(i-7)&15] + s1
		}
		t1 := h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + (e&f ^ ^e&g) + k[i] + w[i&15]
		t2 := (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + (a&b ^ a&c ^ b&c)
		h, g, f, e, dd, c, b, a = g, f, e, dd+t1, c, b, a, t1+t2
	}
	d.h[0] += a
	d.h[1] += b
	d.h[2] += c
	d.h[3] += dd
	d.h[4] += e
	d.h[5] += f
	d.h[6] += g
	d.h[7] += h
}
