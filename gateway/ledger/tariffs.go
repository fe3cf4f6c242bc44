package ledger

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/gateway/store"
	"github.com/farthing-iot/farthing/metering"
	"github.com/farthing-iot/farthing/protocol"
)

// Tariff versions. Every tariff file the gateway prices by is a version
// in the state file, with the time it takes effect: the local file as the
// gateway first read it ("local-1", in effect from the beginning), each
// file an operator changed by hand since ("local-N", in effect from when
// the gateway read it), and each a provider's tariff_set command brought
// (named by the command's id, in effect from its effective time, or from
// when it was applied if that is later: charged usage is never repriced).
// A ticket is priced by the version in force at its usage time; a grant
// is quoted by the version in force now.
//
// bucketTariffs: u64 n (the order versions were recorded in) → version.
// metaTariffIndex: u64 count, then the last version's id: the key of the
// parsed versions the books cache.
var (
	bucketTariffs   = []byte("tariffs")
	metaTariffIndex = []byte("tariff-index")
	// metaTariffLocal: u64 n of the last local version and its number N.
	metaTariffLocal = []byte("tariff-local")
)

// tariffVersion is one recorded tariff file: its id, effective and
// applied times, whether it is local, then the file to the record's end.
type tariffVersion struct {
	N                  uint64
	ID                 string
	Effective, Applied int64 // Unix ms
	Local              bool
	File               []byte // the tariff file as written
	set                *metering.TariffSet
}

func (v tariffVersion) encode() []byte {
	local := uint64(0)
	if v.Local {
		local = 1
	}
	return metering.NewStateWriter().String(v.ID).Int(v.Effective).Int(v.Applied).Uint(local).Rest(v.File)
}

func decodeTariffVersion(n uint64, b []byte) (tariffVersion, error) {
	r := metering.NewStateReader(b, "tariff version")
	v := tariffVersion{N: n, ID: r.String(), Effective: r.Int(), Applied: r.Int(), Local: r.Uint() == 1}
	v.File = bytes.Clone(r.Rest())
	return v, r.Done()
}

// tariffIndex is the parsed versions, by effective time (then by n).
type tariffIndex struct {
	key      string
	versions []tariffVersion
}

// at returns the version in force at ms: the last to take effect at or
// before it (the first version before every effective time).
func (x *tariffIndex) at(ms int64) *tariffVersion {
	i, _ := slices.BinarySearchFunc(x.versions, ms, func(v tariffVersion, t int64) int {
		if v.Effective <= t {
			return -1
		}
		return 1
	})
	return &x.versions[max(i-1, 0)]
}

// putTariffVersion records v as the next version, inside a store
// operation.
func (bk *Books) putTariffVersion(stx *store.Tx, v tariffVersion) error {
	n := tariffCount(stx.Bolt()) + 1
	if err := stx.Put(bucketTariffs, putU64(n), v.encode()); err != nil {
		return err
	}
	return stx.Put(bucketMeta, metaTariffIndex, append(putU64(n), v.ID...))
}

// tariffCount is how many versions the file records.
func tariffCount(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(metaTariffIndex); len(v) >= 8 {
		return getU64(v[:8])
	}
	return 0
}

// tariffsAt returns the tariffs in force at ms and their version id,
// reading the versions inside tx: the Terms' set and "" if the file
// records none.
func (bk *Books) tariffsAt(tx *bolt.Tx, t *Terms, ms int64) (*metering.TariffSet, string, error) {
	key := tx.Bucket(bucketMeta).Get(metaTariffIndex)
	if key == nil {
		return terms(t).Tariffs, "", nil
	}
	x := bk.tariffs.Load()
	if x == nil || x.key != string(key) {
		var err error
		if x, err = loadTariffIndex(tx, x); err != nil {
			return nil, "", err
		}
		bk.tariffs.Store(x)
	}
	v := x.at(ms)
	return v.set, v.ID, nil
}

// loadTariffIndex reads and parses every version, reusing old's parsed
// sets.
func loadTariffIndex(tx *bolt.Tx, old *tariffIndex) (*tariffIndex, error) {
	parsed := map[uint64]*metering.TariffSet{}
	if old != nil {
		for _, v := range old.versions {
			parsed[v.N] = v.set
		}
	}
	x := &tariffIndex{key: string(tx.Bucket(bucketMeta).Get(metaTariffIndex))}
	err := tx.Bucket(bucketTariffs).ForEach(func(k, b []byte) error {
		v, err := decodeTariffVersion(getU64(k), b)
		if err != nil {
			return err
		}
		if v.set = parsed[v.N]; v.set == nil {
			if v.set, err = metering.ParseTariffs("tariff version "+v.ID, v.File); err != nil {
				return err
			}
		}
		x.versions = append(x.versions, v)
		return nil
	})
	slices.SortFunc(x.versions, func(a, b tariffVersion) int {
		return cmp.Or(cmp.Compare(a.Effective, b.Effective), cmp.Compare(a.N, b.N))
	})
	return x, err
}

// RecordLocalTariffs records the gateway's local tariff file as a
// version if its bytes differ from the last local one's: the first as
// "local-1", in force from the beginning; a later one as "local-N", in
// force from now, acknowledged upstream as a local change (an operator's
// override the provider sees). It returns that acknowledgement, if any,
// and the id of the version in force now.
func (bk *Books) RecordLocalTariffs(ctx context.Context, t *Terms, file []byte) (*protocol.CommandAck, string, error) {
	var ack *protocol.CommandAck
	var inForce string
	err := bk.st.Do(ctx, func(stx *store.Tx) error {
		ack = nil
		tx := stx.Bolt()
		meta := tx.Bucket(bucketMeta)
		local := meta.Get(metaTariffLocal)
		n, number := getU64(local[:min(len(local), 8)]), uint64(0)
		if len(local) == 16 {
			number = getU64(local[8:])
		}
		same := false
		if n != 0 {
			old, err := decodeTariffVersion(n, tx.Bucket(bucketTariffs).Get(putU64(n)))
			if err != nil {
				return err
			}
			same = bytes.Equal(old.File, file)
		}
		if !same {
			now := bk.now().UnixMilli()
			v := tariffVersion{ID: fmt.Sprintf("local-%d", number+1), Applied: now, Local: true, File: file}
			if number > 0 {
				v.Effective = now
			}
			if err := bk.putTariffVersion(stx, v); err != nil {
				return err
			}
			count := tariffCount(tx)
			if err := stx.Put(bucketMeta, metaTariffLocal, append(putU64(count), putU64(number+1)...)); err != nil {
				return err
			}
			if number > 0 {
				a := protocol.CommandAck{Gateway: terms(t).GatewayID, Command: v.ID, Target: terms(t).GatewayID, Number: number + 1,
					Action: protocol.ActionTariffSet, Local: true, Time: uint64(now)}
				if _, err := bk.putAck(stx, &a); err != nil {
					return err
				}
				ack = &a
			}
		}
		_, id, err := bk.tariffsAt(tx, t, bk.now().UnixMilli())
		inForce = id
		return err
	})
	return ack, inForce, err
}

// TariffVersion is one tariff version as the operator sees it.
type TariffVersion struct {
	N         uint64    `json:"n"`
	ID        string    `json:"id"`
	Effective time.Time `json:"effective"`
	Applied   time.Time `json:"applied"`
	Local     bool      `json:"local,omitempty"`
	InForce   bool      `json:"in_force,omitempty"`
	Tariffs   []string  `json:"tariffs"`
}

// TariffVersions lists the versions by effective time, marking the one in
// force at now; with them, the tariffs in force now (the Terms' without
// versions).
func (bk *Books) TariffVersions(t *Terms, now time.Time) ([]TariffVersion, *metering.TariffSet, error) {
	var out []TariffVersion
	var set *metering.TariffSet
	err := bk.st.View(func(tx *bolt.Tx) error {
		var id string
		var err error
		if set, id, err = bk.tariffsAt(tx, t, now.UnixMilli()); err != nil || id == "" {
			return err
		}
		for _, v := range bk.tariffs.Load().versions {
			tv := TariffVersion{N: v.N, ID: v.ID, Effective: time.UnixMilli(v.Effective).UTC(), Applied: time.UnixMilli(v.Applied).UTC(),
				Local: v.Local, InForce: v.ID == id}
			for _, tr := range v.set.Tariffs {
				tv.Tariffs = append(tv.Tariffs, tr.ID)
			}
			out = append(out, tv)
		}
		return nil
	})
	return out, set, err
}
