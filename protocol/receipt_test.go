package protocol_test

import (
	"testing"

	"github.com/farthing-iot/farthing/protocol"
)

// A time request round-trips and binds its answer: the answer carries the
// nonce, only with seq 0, status accepted and a time; a request with a
// zero nonce, or one changed after its MAC, is refused.
func TestTimeRequestAndAnswer(t *testing.T) {
	mac, _ := protocol.NewHMAC(make([]byte, 32))
	var enc protocol.Encoder
	req := protocol.TimeRequest{Device: "plug-1", Nonce: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	b, err := enc.AppendTimeRequest(nil, &req, mac)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := protocol.Classify(b); !ok || k != protocol.KindTimeRequest {
		t.Fatalf("classified as %v", k)
	}
	var env protocol.Envelope
	var back protocol.TimeRequest
	if err := protocol.ParseTimeRequest(b, &env, &back); err != nil || back != req || env.Verify(mac, nil) != nil {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	b[len(b)-40] ^= 1
	if err := protocol.ParseTimeRequest(b, &env, &back); err == nil && env.Verify(mac, nil) == nil {
		t.Error("a changed time request verified")
	}
	if _, err := enc.AppendTimeRequest(nil, &protocol.TimeRequest{Device: "plug-1"}, mac); err == nil {
		t.Error("a zero nonce was encoded")
	}
	for _, bad := range []protocol.Receipt{
		{Device: "plug-1", Seq: 3, Status: protocol.StatusAccepted, Time: 5, Nonce: req.Nonce},
		{Device: "plug-1", Status: protocol.StatusRejected, Reason: protocol.ReasonClockSkew, Time: 5, Nonce: req.Nonce},
		{Device: "plug-1", Status: protocol.StatusAccepted, Nonce: req.Nonce},
	} {
		if _, err := enc.AppendReceipt(nil, &bad, mac); err == nil {
			t.Errorf("a time answer %+v was encoded", bad)
		}
	}
}
