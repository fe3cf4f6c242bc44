package protocol_test

import (
	"bytes"
	"testing"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

func TestStreamIDNames(t *testing.T) {
	kid := [protocol.KeyIDLen]byte{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71}
	s, ok := protocol.StreamOf(kid[:], 0x9f3e)
	if !ok {
		t.Fatal("StreamOf refused an 8-byte kid")
	}
	if got, want := s.String(), "0a1b2c3d4e5f6071.9f3e"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
	if got, want := s.Key(42), "0a1b2c3d4e5f6071.9f3e/42"; got != want {
		t.Errorf("Key(42) = %q; want %q", got, want)
	}
	if got, want := protocol.DefaultGatewayID(kid), "gw-0a1b2c3d4e5f6071"; got != want {
		t.Errorf("DefaultGatewayID = %q; want %q", got, want)
	}
	if !protocol.ValidName(protocol.DefaultGatewayID(kid), protocol.MaxDeviceIDLen) {
		t.Error("the default gateway id is not a valid id")
	}
	if _, ok := protocol.StreamOf(kid[:7], 1); ok {
		t.Error("StreamOf accepted a 7-byte kid")
	}
}

// An aggregate's epoch travels as key 14 and survives the strict decoder;
// epoch 0 is not written, so aggregates from before epochs keep their
// bytes.
func TestAggregateEpochRoundTrip(t *testing.T) {
	s, _ := testEd25519(t)
	a := protocol.Aggregate{Gateway: "gw-1", Seq: 3, Provider: "p", Account: "a", Meter: "m", WindowStart: 1, WindowEnd: 2,
		Quantity: 5, Amount: 7, Currency: "EUR", Tickets: 1, MerkleRoot: make([]byte, 32)}
	var enc protocol.Encoder
	old, err := enc.AppendAggregate(nil, &a, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := strict.DecodeAggregate(old); err != nil || got.Epoch != 0 {
		t.Fatalf("epoch-less aggregate: epoch %d, %v", got.Epoch, err)
	}
	a.Epoch = 0xdeadbeefcafe
	b, err := enc.AppendAggregate(nil, &a, s)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(b, old) || len(b) != len(old)+1+9 {
		t.Fatalf("epoch added %d bytes; want key 14 and a uint64 (10)", len(b)-len(old))
	}
	if _, got, err := strict.DecodeAggregate(b); err != nil || got.Epoch != a.Epoch {
		t.Fatalf("decoded epoch %x, %v; want %x", got.Epoch, err, a.Epoch)
	}
}
