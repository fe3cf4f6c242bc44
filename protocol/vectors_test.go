package protocol_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/farthing-iot/farthing/internal/vectors"
	"github.com/farthing-iot/farthing/protocol"
)

// TestVectorsDevice checks the device path against the shared vectors: the
// encoder reproduces every valid message byte for byte, and the canonical
// receipt parser accepts exactly the valid receipts.
func TestVectorsDevice(t *testing.T) {
	f, err := vectors.Load("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(f.Vectors))
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			s, err := f.Signer(v.Key)
			if err != nil {
				t.Fatal(err)
			}
			if v.Valid {
				var enc protocol.Encoder
				var b []byte
				switch {
				case v.Ticket != nil:
					b, err = enc.AppendTicket(nil, v.Ticket, s)
				case v.Receipt != nil:
					b, err = enc.AppendReceipt(nil, v.Receipt, s)
				case v.Aggregate != nil:
					b, err = enc.AppendAggregate(nil, v.Aggregate, s)
				case v.GrantRequest != nil:
					b, err = enc.AppendGrantRequest(nil, v.GrantRequest, s)
				case v.Release != nil:
					b, err = enc.AppendRelease(nil, v.Release, s)
				case v.Command != nil:
					b, err = protocol.SignCommand(v.Command, s)
				case v.CommandAck != nil:
					b, err = enc.AppendCommandAck(nil, v.CommandAck, s)
				}
				if err != nil || !bytes.Equal(b, v.Bytes()) {
					t.Fatalf("encoder gives %x, %v; vector is %s", b, err, v.Hex)
				}
			}
			if v.Kind == "grant_request" || v.Kind == "release" {
				checkDeviceMessage(t, f, &v)
				return
			}
			if v.Kind != "receipt" {
				return
			}
			var env protocol.Envelope
			var r protocol.Receipt
			err = protocol.ParseGrantReceipt(v.Bytes(), &env, &r)
			if err == nil {
				ver, _ := f.Verifier(v.Key)
				err = env.Verify(ver, nil)
			}
			if v.Valid != (err == nil) {
				t.Fatalf("ParseReceipt+Verify = %v; want valid=%v", err, v.Valid)
			}
			if v.Valid && r != *v.Receipt {
				t.Fatalf("ParseReceipt = %+v; want %+v", r, *v.Receipt)
			}
		})
	}
}

// TestCOSEWGHMAC01 checks the MAC_structure and HMAC 256/256 against the
// COSE working group's published example HMac-01.
func TestCOSEWGHMAC01(t *testing.T) {
	raw, err := os.ReadFile("testdata/cose-wg-hmac-01.json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	h := func(k string) []byte {
		b, err := hex.DecodeString(v[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return b
	}
	toMAC := protocol.AppendToBeSigned(nil, protocol.AlgHMAC256, h("protected_hex"), h("payload_hex"))
	if !bytes.Equal(toMAC, h("to_mac_hex")) {
		t.Fatalf("MAC_structure = %X; want %s", toMAC, v["to_mac_hex"])
	}
	mac, err := protocol.NewHMAC(h("key_hex"))
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := mac.Sign(nil, toMAC)
	if !bytes.Equal(tag, h("tag_hex")) {
		t.Fatalf("tag = %X; want %s", tag, v["tag_hex"])
	}
	if err := mac.Verify(toMAC, h("tag_hex")); err != nil {
		t.Fatal(err)
	}
	env := protocol.Envelope{Alg: protocol.AlgHMAC256, Protected: h("protected_hex"), Payload: h("payload_hex"), Signature: tag}
	if got := protocol.AppendEnvelope(nil, &env); !bytes.Equal(got, h("cbor_hex")) {
		t.Fatalf("envelope = %X; want %s", got, v["cbor_hex"])
	}
}

// checkDeviceMessage parses a grant request or release vector with the
// canonical reader: valid ones give the vector's fields and verify,
// invalid ones are refused with the vector's reason.
func checkDeviceMessage(t *testing.T, f *vectors.File, v *vectors.Vector) {
	t.Helper()
	var env protocol.Envelope
	var err error
	var gr protocol.GrantRequest
	var rl protocol.Release
	if v.Kind == "grant_request" {
		err = protocol.ParseGrantRequest(v.Bytes(), &env, &gr)
	} else {
		err = protocol.ParseRelease(v.Bytes(), &env, &rl)
	}
	if err == nil {
		ver, _ := f.Verifier(v.Key)
		err = env.Verify(ver, nil)
	}
	if v.Valid != (err == nil) || (!v.Valid && protocol.ReasonOf(err).String() != v.Reason) {
		t.Fatalf("parse+verify = %v; want valid=%v reason %q", err, v.Valid, v.Reason)
	}
	switch {
	case !v.Valid:
	case v.GrantRequest != nil && gr != *v.GrantRequest:
		t.Fatalf("grant request = %+v; want %+v", gr, *v.GrantRequest)
	case v.Release != nil && rl != *v.Release:
		t.Fatalf("release = %+v; want %+v", rl, *v.Release)
	}
}
