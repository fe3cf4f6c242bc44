package provider_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
	"github.com/farthing-iot/farthing/provider"
	"github.com/farthing-iot/farthing/provider/pgbooks"
)

// ack signs a gateway's acknowledgement of command id (seq number of
// target) as stream record seq.
func (g gw) ack(t *testing.T, id string, seq uint64, command, target string, group bool, number uint64, refused protocol.Reason) []byte {
	t.Helper()
	a := protocol.CommandAck{Gateway: id, Seq: seq, Epoch: 1, Command: command, Target: target, Group: group, Number: number,
		Action: protocol.ActionRevokeVoucher, Time: 1_790_000_000_000 + seq, Refused: refused != protocol.ReasonNone, Reason: refused}
	var enc protocol.Encoder
	b, err := enc.AppendCommandAck(nil, &a, g.s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fleet's books, in the embedded file and in PostgreSQL: commands
// are numbered per target with no gaps and no id twice; a poll gets the
// commands after its cursor, in order, and waits for a push; the
// gateways' acknowledgements are booked in their streams, a refusal out
// of order does not hide a later application, and the status says who
// applied what, who is behind, and answers to commands never pushed.
func TestFleetBooks(t *testing.T) {
	stores(t, func(t *testing.T, open opener) {
		a, b := newGW(t), newGW(t)
		r, err := open(provider.Keys(a.pub, b.pub))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		_, priv, _ := ed25519.GenerateKey(nil)
		ctl, _ := protocol.NewEd25519Signer(priv)
		r.SetFleet(&provider.Fleet{Key: ctl, Groups: map[string][]string{"berlin": {"gw-a", "gw-b"}}})
		ctx := context.Background()
		push := func(id string) protocol.Command {
			c, signed, err := r.Push(ctx, protocol.Command{Target: "berlin", Group: true, ID: id, Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-" + id}})
			if err != nil {
				t.Fatal(err)
			}
			if _, back, err := strict.DecodeCommand(signed); err != nil || back.Seq != c.Seq || back.ID != id {
				t.Fatalf("signed command: %+v %v", back, err)
			}
			return c
		}
		if c1, c2 := push("c-1"), push("c-2"); c1.Seq != 1 || c2.Seq != 2 {
			t.Fatalf("seqs %d, %d", c1.Seq, c2.Seq)
		}
		if _, _, err := r.Push(ctx, protocol.Command{Target: "berlin", Group: true, ID: "c-1", Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V"}}); !errors.Is(err, provider.ErrCommandID) {
			t.Fatalf("an id pushed twice: %v", err)
		}
		cmds, err := r.PollCommands(ctx, map[string]uint64{"group/berlin": 1, "gw/gw-a": 0}, 16, time.Second)
		if err != nil || len(cmds) != 1 {
			t.Fatalf("poll after 1: %d %v", len(cmds), err)
		}
		waited := make(chan int)
		go func() {
			cmds, _ := r.PollCommands(ctx, map[string]uint64{"group/berlin": 2}, 16, 10*time.Second)
			waited <- len(cmds)
		}()
		time.Sleep(100 * time.Millisecond)
		push("c-3")
		if n := <-waited; n != 1 {
			t.Fatalf("a waiting poll got %d commands", n)
		}
		mustBook(t, r, a.ack(t, "gw-a", 1, "c-2", "berlin", true, 2, protocol.ReasonCommandOutOfOrder), provider.Accepted)
		mustBook(t, r, a.ack(t, "gw-a", 2, "c-1", "berlin", true, 1, protocol.ReasonNone), provider.Accepted)
		mustBook(t, r, a.ack(t, "gw-a", 3, "c-2", "berlin", true, 2, protocol.ReasonNone), provider.Accepted)
		mustBook(t, r, a.ack(t, "gw-a", 3, "c-2", "berlin", true, 2, protocol.ReasonNone), provider.Duplicate)
		mustBook(t, r, b.ack(t, "gw-b", 1, "c-1", "berlin", true, 1, protocol.ReasonCommandExpired), provider.Accepted)
		mustBook(t, r, b.ack(t, "gw-b", 2, "forged-9", "gw-b", false, 1, protocol.ReasonCommandForged), provider.Accepted)
		st, err := r.FleetStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]provider.CommandStatus{}
		for _, c := range st.Commands {
			byID[c.ID] = c
		}
		if c := byID["c-1"]; strings.Join(c.Applied, ",") != "gw-a" || c.Refused["gw-b"] != "command_expired" || len(c.Pending) != 0 {
			t.Errorf("c-1: %+v", c)
		}
		if c := byID["c-2"]; strings.Join(c.Applied, ",") != "gw-a" || strings.Join(c.Pending, ",") != "gw-b" {
			t.Errorf("c-2: the application must win over the earlier refusal out of order: %+v", c)
		}
		if strings.Join(st.Behind["gw-b"], ",") != "c-2,c-3" || strings.Join(st.Behind["gw-a"], ",") != "c-3" {
			t.Errorf("behind: %v", st.Behind)
		}
		if len(st.Foreign) != 1 || st.Foreign[0].Command != "forged-9" || st.Foreign[0].Reason != protocol.ReasonCommandForged {
			t.Errorf("foreign: %+v", st.Foreign)
		}
		rep, err := r.Report()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range rep.Streams {
			if s.Missing != 0 {
				t.Errorf("stream %s misses %d: acknowledgements fill the seqs", s.Stream, s.Missing)
			}
		}
		// gw-a restored from a backup taken after its seq 2: its answer
		// at seq 3 (c-2 applied) is forgotten, it is behind on c-2 again.
		mustBook(t, r, a.restoreRecord(t, "gw-a", 2, 1, 2), provider.Accepted)
		if st, err = r.FleetStatus(ctx); err != nil {
			t.Fatal(err)
		}
		if strings.Join(st.Behind["gw-a"], ",") != "c-2,c-3" {
			t.Errorf("behind after gw-a's restore: %v", st.Behind)
		}
	})
}

// Two receivers on one PostgreSQL database: a gateway's poll waiting at
// one gets a command pushed through the other, within the poll's
// recheck.
func TestPollSeesAnotherReceiversPush(t *testing.T) {
	url, err := cluster.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	ctl, _ := protocol.NewEd25519Signer(priv)
	var rs [2]*provider.Receiver
	for i := range rs {
		if rs[i], err = pgbooks.Open(context.Background(), url, nil, pgbooks.Options{}); err != nil {
			t.Fatal(err)
		}
		defer rs[i].Close()
		rs[i].SetFleet(&provider.Fleet{Key: ctl})
	}
	got := make(chan int)
	go func() {
		cmds, _ := rs[1].PollCommands(context.Background(), map[string]uint64{"gw/gw-a": 0}, 16, 20*time.Second)
		got <- len(cmds)
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if _, _, err := rs[0].Push(context.Background(), protocol.Command{Target: "gw-a", ID: "c-1", Action: protocol.ActionRevokeVoucher, Vouchers: []string{"V-1"}}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 1 || time.Since(start) > 10*time.Second {
		t.Fatalf("the poll at the other receiver got %d commands after %v", n, time.Since(start))
	}
}
