package protocol

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

// TestTinyHashesEqualTheStandardOnes: the HMAC and HKDF that firmware
// builds use (on tinysha) give the standard library's results, for keys
// shorter than, equal to and longer than a block, and for every key
// purpose.
func TestTinyHashesEqualTheStandardOnes(t *testing.T) {
	for _, klen := range []int{0, 1, 32, 64, 65, 200} {
		key := bytes.Repeat([]byte{byte(klen)}, klen)
		for _, msg := range [][]byte{nil, []byte("abc"), bytes.Repeat([]byte{7}, 1000)} {
			want := hmac.New(sha256.New, key)
			want.Write(msg)
			got := newTinyHMAC(key)
			got.Write(msg)
			if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("HMAC with a %d-byte key over %d bytes differs", klen, len(msg))
			}
			got.Reset()
			got.Write(msg)
			if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("HMAC after Reset differs (key %d bytes)", klen)
			}
		}
	}
	master := bytes.Repeat([]byte{0x42}, MasterSecretSize)
	for _, p := range []KeyPurpose{PurposeTicket, PurposeReceipt, PurposeDTLSPSK, PurposeMQTTPassword} {
		want, _ := hkdf.Key(sha256.New, master, nil, string(p), 32)
		if got := tinyHKDF(master, string(p)); !bytes.Equal(got, want) {
			t.Fatalf("HKDF for %q: %x; want %x", p, got, want)
		}
	}
	if !tinyEqual([]byte{1, 2}, []byte{1, 2}) || tinyEqual([]byte{1, 2}, []byte{1, 3}) || tinyEqual([]byte{1}, []byte{1, 2}) {
		t.Fatal("tinyEqual")
	}
}
