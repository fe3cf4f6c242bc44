//go:build cgo

package pkcs11key_test

import (
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/farthing-iot/farthing/gateway/pkcs11key"
	"github.com/farthing-iot/farthing/internal/softhsm"
	"github.com/farthing-iot/farthing/protocol"
)

// TestKeyInSoftHSM: an Ed25519 key made in a SoftHSM2 token signs
// aggregates that verify with its public key, and its private half
// cannot be read out of the token.
func TestKeyInSoftHSM(t *testing.T) {
	tok, err := softhsm.New(t.TempDir(), "farthing-gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	cfg := pkcs11key.Config{Module: softhsm.Module, Token: tok.Label, Key: "gateway", PINFile: tok.PINFile}
	pub, err := pkcs11key.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pkcs11key.Generate(cfg); err == nil {
		t.Fatal("a second key under the same label was made")
	}
	s, err := pkcs11key.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Public().Equal(pub) {
		t.Fatal("the signer's public key is not the one generated")
	}
	var enc protocol.Encoder
	b, err := enc.AppendAggregate(nil, &protocol.Aggregate{Gateway: "gw-hsm", Seq: 1, Provider: "p", Account: "a", Meter: "energy_wh",
		WindowStart: 1, WindowEnd: 2, Quantity: 3, Amount: 4, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}, s)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := protocol.NewEd25519Verifier(pub)
	var env protocol.Envelope
	if err := protocol.ParseEnvelope(b, &env); err != nil || env.Verify(v, nil) != nil {
		t.Fatalf("an aggregate signed in the token does not verify: %v", err)
	}
	if len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public key of %d bytes", len(pub))
	}
	// The private key's value cannot be read: sensitive, not extractable.
	ctx := pkcs11.New(softhsm.Module)
	ctx.Initialize()
	defer ctx.Destroy()
	defer ctx.Finalize()
	slots, _ := ctx.GetSlotList(true)
	var session pkcs11.SessionHandle
	for _, sl := range slots {
		if ti, _ := ctx.GetTokenInfo(sl); ti.Label == tok.Label {
			session, _ = ctx.OpenSession(sl, pkcs11.CKF_SERIAL_SESSION)
		}
	}
	if err := ctx.Login(session, pkcs11.CKU_USER, tok.PIN); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		t.Fatal(err)
	}
	ctx.FindObjectsInit(session, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)})
	objs, _, _ := ctx.FindObjects(session, 4)
	ctx.FindObjectsFinal(session)
	if len(objs) != 1 {
		t.Fatalf("%d private keys in the token", len(objs))
	}
	if attrs, err := ctx.GetAttributeValue(session, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil && len(attrs) == 1 && len(attrs[0].Value) > 0 {
		t.Fatalf("the private key was read out of the token: %d bytes", len(attrs[0].Value))
	}
	flags, err := ctx.GetAttributeValue(session, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil)})
	if err != nil || len(flags) != 2 || flags[0].Value[0] != 0 || flags[1].Value[0] != 1 {
		t.Fatalf("the private key's flags: %v, %v; want not extractable, sensitive", flags, err)
	}
	// A PIN file others may read is refused.
	os.Chmod(tok.PINFile, 0o644)
	if _, err := pkcs11key.Open(cfg); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("a PIN file others may read: %v", err)
	}
}
