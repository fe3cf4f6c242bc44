package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// ErrUnknownDevice: the state file has no record of the device (it never
// had a ticket accepted).
var ErrUnknownDevice = errors.New("no ticket of this device in the books")

// DeviceView is one device's progress as the state file has it: its last
// accepted ticket, each meter's register, and its most recent tickets
// still kept (pruning removes tickets once every upstream confirmed them).
type DeviceView struct {
	ID      string         `json:"id"`
	LastSeq uint64         `json:"last_seq"`
	Meters  []MeterView    `json:"meters"`
	Recent  []TicketRecord `json:"recent_tickets"`
}

// MeterView is one meter's last charged reading.
type MeterView struct {
	Name     string `json:"meter"`
	Epoch    uint64 `json:"epoch"`
	Register uint64 `json:"register"`
	Seq      uint64 `json:"seq"`
	Time     int64  `json:"time_ms"`
}

// TicketRecord is an accepted ticket as kept: what it charged and, from
// its bytes, when the device dated it and what it read.
type TicketRecord struct {
	Seq      uint64         `json:"seq"`
	Charged  metering.Nanos `json:"charged_nanos"`
	Time     uint64         `json:"time_ms,omitempty"`
	Readings string         `json:"readings,omitempty"`
}

// Device returns id's progress with up to recent of its latest tickets,
// newest first; ErrUnknownDevice if the books hold nothing of it.
func (bk *Books) Device(id string, recent int) (DeviceView, error) {
	st := bk.st
	v := DeviceView{ID: id, Meters: []MeterView{}, Recent: []TicketRecord{}}
	err := st.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices).Get([]byte(id))
		if b == nil {
			return ErrUnknownDevice
		}
		ds, err := decodeDeviceState(b)
		if err != nil {
			return err
		}
		v.LastSeq = ds.LastSeq
		for _, m := range ds.Meters {
			v.Meters = append(v.Meters, MeterView{Name: m.Name, Epoch: m.State.Epoch, Register: m.State.Register, Seq: m.State.Seq, Time: m.State.Time})
		}
		prefix := append(joinKey(id), 0)
		c := tx.Bucket(bucketTickets).Cursor()
		end := seqKey(math.MaxUint64, id)
		k, val := c.Seek(end)
		switch {
		case k == nil:
			k, val = c.Last()
		case !bytes.Equal(k, end):
			k, val = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(v.Recent) < recent; k, val = c.Prev() {
			r, err := decodeTicketRecord(val)
			if err != nil || len(k) != len(prefix)+8 {
				continue
			}
			tr := TicketRecord{Seq: binary.BigEndian.Uint64(k[len(prefix):]), Charged: metering.Nanos(r.Charged)}
			var pw protocol.PaywordTicket
			if protocol.IsPaywordTicket(r.Raw) && protocol.ParsePaywordTicket(r.Raw, &pw) == nil {
				tr.Readings = fmt.Sprintf("payword %d of chain %x", pw.Index, pw.Chain)
			} else if _, tk, err := strict.DecodeTicket(r.Raw); err == nil {
				tr.Time = tk.Time
				for i, rd := range tk.Readings {
					if i > 0 {
						tr.Readings += ", "
					}
					tr.Readings += rd.Meter + "=" + strconv.FormatUint(rd.Register, 10)
				}
			}
			v.Recent = append(v.Recent, tr)
		}
		return nil
	})
	return v, err
}

// DeviceSeqs returns the last accepted seq of each of ids that the books
// know, in one read.
func (bk *Books) DeviceSeqs(ids []string) (map[string]uint64, error) {
	st := bk.st
	out := make(map[string]uint64, len(ids))
	err := st.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		for _, id := range ids {
			if v := b.Get([]byte(id)); v != nil {
				if ds, err := decodeDeviceState(v); err == nil {
					out[id] = ds.LastSeq
				}
			}
		}
		return nil
	})
	return out, err
}
