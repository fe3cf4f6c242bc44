package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/farthing-iot/farthing/gateway"
	"github.com/farthing-iot/farthing/gateway/ledger"
	"github.com/farthing-iot/farthing/gateway/operator"
	"github.com/farthing-iot/farthing/gateway/store"
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

// runTicket writes one signed ticket. With --next it asks the gateway
// (its operator API, or its state file when no daemon runs) for the
// device's last seq, epoch and registers, and makes the ticket that comes
// next: seq + 1, the same epoch, each --add added to its meter's register.
func runTicket(e *env, args []string) error {
	fs := newFlags("ticket")
	keyPath := fs.String("key", "", "device key file: ed25519 private key or hmac master secret (with --next: default DATA/device-keys/ID.key or ID.secret)")
	next := fs.Bool("next", false, "make the device's next ticket: seq, epoch and registers from the gateway (--data or --operator)")
	var adds readings
	fs.Var(&adds, "add", "METER=AMOUNT with --next: the meter's register plus AMOUNT, repeatable")
	data := fs.String("data", defaultData, "the gateway's data directory (with --next)")
	op := addOperatorFlags(fs)
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
	if *next {
		if err := nextTicket(*data, op, fs, &t, &rs, adds, keyPath); err != nil {
			return err
		}
	} else if len(adds) > 0 {
		return usageError{"--add goes with --next"}
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

// nextTicket fills in t (seq, epoch) and rs (the registers plus adds) from
// the gateway's record of the device, and the key's default path.
func nextTicket(data string, op *operatorFlags, fs *flag.FlagSet, t *protocol.Ticket, rs *readings, adds readings, keyPath *string) error {
	if t.Device == "" {
		return usageError{"--next needs --device"}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["seq"] {
		return usageError{"--next makes the seq; leave --seq out"}
	}
	var st operator.DeviceStatus
	err := op.getJSON(data, "/devices/"+url.PathEscape(t.Device), &st)
	if errors.Is(err, errNoDaemon) {
		st.DeviceView, err = deviceFromFile(data, t.Device)
	}
	if err != nil {
		return fmt.Errorf("device %s: %w", t.Device, err)
	}
	t.Seq = st.LastSeq + 1
	registers := map[string]uint64{}
	for _, m := range st.Meters {
		registers[m.Name] = m.Register
		if !set["epoch"] {
			t.Epoch = max(t.Epoch, m.Epoch)
		}
	}
	for _, a := range adds {
		r := registers[a.Meter]
		if r+a.Register < r {
			return fmt.Errorf("--add %s=%d: the register overflows", a.Meter, a.Register)
		}
		*rs = append(*rs, protocol.Reading{Meter: a.Meter, Register: r + a.Register})
	}
	if *keyPath == "" {
		for _, f := range []string{t.Device + ".key", t.Device + ".secret"} {
			p := filepath.Join(data, "device-keys", f)
			if _, err := os.Stat(p); err == nil {
				*keyPath = p
				break
			}
		}
	}
	return nil
}

// deviceFromFile reads a device's record from a state file no daemon has
// open.
func deviceFromFile(data, id string) (ledger.DeviceView, error) {
	st, err := store.Open(filepath.Join(data, gateway.StateFile), store.Options{ReadOnly: true})
	if err != nil {
		return ledger.DeviceView{}, err
	}
	defer st.Close()
	v, err := ledger.New(st, ledger.Config{}).Device(id, 0)
	if errors.Is(err, ledger.ErrUnknownDevice) {
		return ledger.DeviceView{ID: id}, nil
	}
	return v, err
}
