package protocol

import "testing"

// TestClassify: each device message is told by a peek at its bytes, and
// bytes that name no kind are said to.
func TestClassify(t *testing.T) {
	key := make([]byte, 32)
	mac, err := NewHMAC(key)
	if err != nil {
		t.Fatal(err)
	}
	var e Encoder
	tk, err := e.AppendTicket(nil, &Ticket{Device: "d", Seq: 1, Time: 1, Readings: []Reading{{Meter: "m", Register: 1}}}, mac)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := AppendPaywordTicket(nil, &PaywordTicket{Device: "d", Index: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want Kind
		ok   bool
	}{
		{"ticket", tk, KindTicket, true},
		{"payword", pw, KindPayword, true},
		{"empty", nil, 0, false},
		{"garbage", []byte{0xff, 0x00}, 0, false},
	} {
		if k, ok := Classify(c.b); k != c.want || ok != c.ok {
			t.Errorf("Classify(%s) = %v, %v; want %v, %v", c.name, k, ok, c.want, c.ok)
		}
	}
}
