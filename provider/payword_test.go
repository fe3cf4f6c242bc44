package provider

import (
	"errors"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
)

// TestVerifyPayword: a proof between two points of a chain gives the
// usage between their registers; every way to bend it is refused.
func TestVerifyPayword(t *testing.T) {
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	seed := protocol.Payword{1}
	id := protocol.ChainID{2}
	const n = 500
	c := protocol.Commitment{Device: "d", Chain: id, Number: 1, Meter: "water_ml", Units: 5, Length: n,
		Anchor: protocol.PaywordWalk(&id, seed, n), Start: 100, Expiry: 1}
	var enc protocol.Encoder
	cb, err := enc.AppendCommitment(nil, &c, mac)
	if err != nil {
		t.Fatal(err)
	}
	w := func(i uint32) protocol.Payword { return protocol.PaywordWalk(&id, seed, uint64(n-i)) }
	good := PaywordProof{Commitment: cb, From: 40, FromWord: w(40), To: 90, ToWord: w(90)}
	u, err := VerifyPayword(good, mac)
	if err != nil || u.Quantity != 250 || u.FromRegister != 300 || u.ToRegister != 550 {
		t.Fatalf("%+v %v; want 250 ml from 300 to 550", u, err)
	}
	otherKey, _ := protocol.NewHMAC(append(make([]byte, 31), 1))
	for name, p := range map[string]struct {
		proof PaywordProof
		key   protocol.Verifier
	}{
		"changed payword":   {PaywordProof{cb, 40, w(40), 90, w(91)}, mac},
		"stretched":         {PaywordProof{cb, 40, w(40), 91, w(90)}, mac},
		"not of the anchor": {PaywordProof{cb, 40, w(41), 91, w(91)}, mac},
		"past the end":      {PaywordProof{cb, 40, w(40), n + 1, w(90)}, mac},
		"backwards":         {PaywordProof{cb, 90, w(90), 40, w(40)}, mac},
		"another key":       {good, otherKey},
		"not a commitment":  {PaywordProof{cb[:len(cb)-1], 40, w(40), 90, w(90)}, mac},
	} {
		if _, err := VerifyPayword(p.proof, p.key); !errors.Is(err, ErrPayword) {
			t.Errorf("%s: %v; want ErrPayword", name, err)
		}
	}
}
