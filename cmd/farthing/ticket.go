package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/internal/keyfile"
	"github.com/farthing-iot/farthing/protocol"
)

// readings collects repeated --reading METER=VALUE flags.
type readings []protocol.Reading

func (r *readings) String() string { return fmt.Sprint(*r) }

func (r *readings) Set(s string) error {
	meter, value, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not METER=VALUE", s)
	}
	v, err := strconv.ParseUint(value, 10, 64)
	if err != nil {
		return fmt.Errorf("%q: register must be an unsigned integer", s)
	}
	*r = append(*r, protocol.Reading{Meter: meter, Register: v})
	return nil
}

// runTicket writes one signed ticket.
func runTicket(e *env, args []string) error {
	fs := newFlags("ticket")
	keyPath := fs.String("key", "", "device key file: ed25519 private key or hmac master secret")
	var t protocol.Ticket
	var rs readings
	fs.StringVar(&t.Device, "device", "", "device id")
	fs.Uint64Var(&t.Seq, "seq", 0, "sequence number (>= 1)")
	fs.Var(&rs, "reading", "METER=REGISTER, repeatable (1..16)")
	fs.Uint64Var(&t.Time, "time", 0, "device time in Unix milliseconds (default: now)")
	fs.Uint64Var(&t.Epoch, "epoch", 0, "register epoch")
	fs.StringVar(&t.Account, "account", "", "account id (optional)")
	fs.StringVar(&t.Session, "session", "", "session id (optional)")
	out := fs.String("out", "", "write the ticket to FILE instead of stdout")
	asHex := fs.Bool("hex", false, "write hex instead of binary")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *keyPath == "" {
		return usageError{"--key is required"}
	}
	t.Readings = rs
	if t.Time == 0 {
		t.Time = uint64(time.Now().UnixMilli())
	}
	if err := t.Validate(); err != nil {
		return err
	}
	k, err := keyfile.Load(*keyPath)
	if err != nil {
		return err
	}
	s, err := k.Signer(protocol.KindTicket)
	if err != nil {
		return err
	}
	var enc protocol.Encoder
	b, err := enc.AppendTicket(nil, &t, s)
	if err != nil {
		return err
	}
	if *asHex {
		b = append([]byte(hex.EncodeToString(b)), '\n')
	}
	return writeOut(e, *out, b)
}
