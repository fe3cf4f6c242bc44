package tinysha

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// TestNISTVectors: the FIPS 180-4 examples and the long-message vector of
// NIST's SHA-256 test suite.
func TestNISTVectors(t *testing.T) {
	for _, v := range []struct{ in, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
		{"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
			"cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
		{strings.Repeat("a", 1_000_000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
		// Lengths around the padding's edges (55, 56, 63, 64 bytes).
		{strings.Repeat("x", 55), hex.EncodeToString(sum(strings.Repeat("x", 55)))},
	} {
		got := Sum256([]byte(v.in))
		if hex.EncodeToString(got[:]) != v.want {
			t.Errorf("SHA-256 of %d bytes: %x; want %s", len(v.in), got, v.want)
		}
	}
}

func sum(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// FuzzEqualsCryptoSHA256: any input, written in any two pieces, digests
// as crypto/sha256 digests it; a digest can go on being written after Sum.
func FuzzEqualsCryptoSHA256(f *testing.F) {
	for _, n := range []int{0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000} {
		f.Add(bytes.Repeat([]byte{0x61}, n), uint16(n/2))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		want := sha256.Sum256(data)
		if got := Sum256(data); got != want {
			t.Fatalf("Sum256(%x) = %x; crypto/sha256 says %x", data, got, want)
		}
		c := int(cut) % (len(data) + 1)
		var d Digest
		d.Reset()
		d.Write(data[:c])
		mid := d.Sum(nil)
		d.Write(data[c:])
		if got := d.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("written in two pieces at %d: %x; want %x", c, got, want)
		}
		if m := sha256.Sum256(data[:c]); !bytes.Equal(mid, m[:]) {
			t.Fatalf("Sum after %d bytes: %x; want %x", c, mid, m)
		}
	})
}
