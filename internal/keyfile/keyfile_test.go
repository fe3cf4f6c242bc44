package keyfile_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

func TestRoundTrip(t *testing.T) {
	ed, _ := keyfile.GenerateEd25519()
	m, _ := keyfile.GenerateMaster()
	for _, k := range []*keyfile.Key{ed, m} {
		b, err := k.EncodePrivate()
		if err != nil {
			t.Fatal(err)
		}
		got, err := keyfile.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		s1, _ := k.Signer(protocol.KindTicket)
		s2, _ := got.Signer(protocol.KindTicket)
		if string(s1.KeyID()) != string(s2.KeyID()) {
			t.Errorf("%s: key id changed across encode/parse", k.Kind())
		}
	}
	pub, _ := ed.EncodePublic()
	k, err := keyfile.Parse(pub)
	if err != nil || k.Public == nil {
		t.Fatalf("Parse(public) = %+v, %v", k, err)
	}
	if _, err := k.Signer(protocol.KindTicket); err == nil {
		t.Error("a public key signed")
	}
	// Ticket and receipt keys derived from one master differ.
	ts, _ := m.Signer(protocol.KindTicket)
	rs, _ := m.Signer(protocol.KindReceipt)
	if string(ts.KeyID()) == string(rs.KeyID()) {
		t.Error("ticket and receipt keys are the same")
	}
}

func TestParseRefuses(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	for name, in := range map[string][]byte{
		"not pem":      []byte("hello"),
		"other type":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"p256 key":     pem.EncodeToMemory(&pem.Block{Type: keyfile.TypePrivate, Bytes: der}),
		"short master": pem.EncodeToMemory(&pem.Block{Type: keyfile.TypeMaster, Bytes: make([]byte, 16)}),
		"bad pkcs8":    pem.EncodeToMemory(&pem.Block{Type: keyfile.TypePrivate, Bytes: []byte{0x30, 0x01}}),
	} {
		if _, err := keyfile.Parse(in); err == nil {
			t.Errorf("%s: Parse accepted it", name)
		}
	}
}

func TestWriteNewNeverOverwrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := keyfile.WriteNew(p, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := keyfile.WriteNew(p, []byte("b"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second WriteNew = %v; want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "a" {
		t.Fatalf("file now holds %q", b)
	}
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, []byte(strings.Repeat("x", keyfile.MaxFileSize+1)), 0o600)
	if _, err := keyfile.Load(big); err == nil {
		t.Error("Load accepted an oversized file")
	}
}
