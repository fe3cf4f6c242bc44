package protocol_test

import (
	"testing"

	"github.com/farthing-iot/farthing/protocol"
)

func TestTopicsRoundTrip(t *testing.T) {
	for _, tp := range []protocol.Topics{{}, {Prefix: "site/7"}} {
		if got := tp.DeviceOf(tp.Ticket("plug-1")); got != "plug-1" {
			t.Errorf("%+v: DeviceOf(Ticket(plug-1)) = %q", tp, got)
		}
		for _, bad := range []string{tp.Receipt("plug-1"), tp.Ticket("a/b"), tp.Ticket("+"), "elsewhere/plug-1/ticket"} {
			if got := tp.DeviceOf(bad); got != "" {
				t.Errorf("%+v: DeviceOf(%q) = %q; want none", tp, bad, got)
			}
		}
	}
	if got := (protocol.Topics{}).Ticket("d"); got != "farthing/v1/d/ticket" {
		t.Errorf("default ticket topic %q", got)
	}
	if got := (protocol.Topics{}).AggregateFilter(); got != "farthing/v1/aggregates/#" {
		t.Errorf("aggregate filter %q", got)
	}
}

func TestContentFormatOf(t *testing.T) {
	if protocol.ContentFormatOf([]byte{0xd2, 0x84}) != 18 || protocol.ContentFormatOf([]byte{0xd1, 0x84}) != 17 {
		t.Error("content format by COSE tag: want 18 for Sign1, 17 for Mac0")
	}
}
