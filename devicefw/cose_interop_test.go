package devicefw_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"reflect"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/farthing-iot/farthing/devicefw"
	"github.com/farthing-iot/farthing/internal/vectors"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// These tests hold Farthing to a COSE implementation no one here wrote:
// github.com/veraison/go-cose. It has no COSE_Mac0, so HMAC tickets are held
// to the COSE working group's published example instead (TestCOSEWGHMAC01
// in package protocol).

func edKey(t *testing.T) ed25519.PrivateKey {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(0x40 + i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// TestFirmwareTicketVerifiesWithGoCOSE: a ticket made by the firmware
// client is a COSE_Sign1 that go-cose parses and verifies, with the kid
// and payload we put in.
func TestFirmwareTicketVerifiesWithGoCOSE(t *testing.T) {
	priv := edKey(t)
	signer, _ := protocol.NewEd25519Signer(priv)
	k := testKeys(t)
	c, err := devicefw.New(devicefw.Config{Device: "evse-7", Meters: []string{"energy_wh", "session_ms"}, Signer: signer,
		Receipts: k.receipt, Seq: &flash{}, Session: "s-1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 20; i++ {
		msg, _, err := c.Build(nil, 1_790_000_000_000+i, []devicefw.Reading{{Meter: 0, Register: 1000 * i}, {Meter: 1, Register: i}})
		if err != nil {
			t.Fatal(err)
		}
		var m cose.Sign1Message
		if err := m.UnmarshalCBOR(msg); err != nil {
			t.Fatalf("go-cose cannot parse the ticket: %v", err)
		}
		v, err := cose.NewVerifier(cose.AlgorithmEdDSA, priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Verify(nil, v); err != nil {
			t.Fatalf("go-cose does not verify the ticket: %v", err)
		}
		if kid, _ := m.Headers.Protected[cose.HeaderLabelKeyID].([]byte); !reflect.DeepEqual(kid, signer.KeyID()) {
			t.Fatalf("go-cose sees kid %x; want %x", kid, signer.KeyID())
		}
		// A flipped payload bit must fail go-cose's verification too.
		m.Payload[len(m.Payload)-1] ^= 1
		if err := m.Verify(nil, v); err == nil {
			t.Fatal("go-cose verified a tampered ticket")
		}
	}
}

// TestGoCOSETicketAcceptedByGateway: a ticket signed by go-cose, around a
// payload encoded by package protocol, passes the gateway's strict decoder
// and verifies.
func TestGoCOSETicketAcceptedByGateway(t *testing.T) {
	priv := edKey(t)
	signer, _ := cose.NewSigner(cose.AlgorithmEdDSA, priv)
	ours, _ := protocol.NewEd25519Verifier(priv.Public().(ed25519.PublicKey))
	want := protocol.Ticket{Device: "vend-3", Seq: 9, Time: 1_790_000_000_000, Epoch: 2,
		Readings: []protocol.Reading{{Meter: "items", Register: 88}, {Meter: "water_ml", Register: 12_000}}, Account: "school-7"}
	payload, err := protocol.AppendTicketPayload(nil, &want)
	if err != nil {
		t.Fatal(err)
	}
	m := cose.NewSign1Message()
	m.Headers.Protected.SetAlgorithm(cose.AlgorithmEdDSA)
	m.Headers.Protected[cose.HeaderLabelKeyID] = ours.KeyID()
	m.Payload = payload
	if err := m.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	msg, err := m.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	env, got, err := strict.DecodeTicket(msg)
	if err != nil {
		t.Fatalf("gateway refuses go-cose's ticket %x: %v", msg, err)
	}
	if err := env.Verify(ours, nil); err != nil {
		t.Fatalf("gateway cannot verify go-cose's ticket: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v; want %+v", got, want)
	}
}

// TestSign1VectorsVerifyWithGoCOSE: every valid EdDSA vector in
// protocol/testdata verifies with go-cose.
func TestSign1VectorsVerifyWithGoCOSE(t *testing.T) {
	f, err := vectors.Load("../protocol/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range f.Vectors {
		if v.Key != "ed25519" || !v.Valid {
			continue
		}
		var m cose.Sign1Message
		if err := m.UnmarshalCBOR(v.Bytes()); err != nil {
			t.Fatalf("%s: go-cose: %v", v.Name, err)
		}
		pub := ed25519.NewKeyFromSeed(mustHex(t, f.Keys["ed25519-seed"])).Public()
		cv, _ := cose.NewVerifier(cose.AlgorithmEdDSA, pub)
		if err := m.Verify(nil, cv); err != nil {
			t.Fatalf("%s: go-cose does not verify: %v", v.Name, err)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d EdDSA vectors", n)
	}
}
