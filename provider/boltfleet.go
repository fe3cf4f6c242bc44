package provider

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"

	"github.com/farthing-iot/farthing/protocol"
	"github.com/farthing-iot/farthing/protocol/strict"
)

// The control channel's buckets in the embedded file:
//
//	fleet-commands: target 0 seq (u64) → the signed command
//	fleet-ids:      command id → target 0 seq
//	fleet-acks:     command id 0 gateway → the latest acknowledgement
var (
	bucketFleetCommands = []byte("fleet-commands")
	bucketFleetIDs      = []byte("fleet-ids")
	bucketFleetAcks     = []byte("fleet-acks")
)

func fleetKey(target string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(target+"\x00"), seq)
}

func (bb boltBooks) PushCommand(_ context.Context, target, id string, sign func(seq uint64) ([]byte, error)) (uint64, error) {
	var seq uint64
	err := bb.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketFleetIDs).Get([]byte(id)) != nil {
			return fmt.Errorf("%w: %s", ErrCommandID, id)
		}
		seq = 1
		c := tx.Bucket(bucketFleetCommands).Cursor()
		prefix := []byte(target + "\x00")
		k, _ := c.Seek(fleetKey(target, math.MaxUint64))
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
			seq = binary.BigEndian.Uint64(k[len(prefix):]) + 1
		}
		b, err := sign(seq)
		if err != nil {
			return err
		}
		key := fleetKey(target, seq)
		if err := tx.Bucket(bucketFleetCommands).Put(key, b); err != nil {
			return err
		}
		return tx.Bucket(bucketFleetIDs).Put([]byte(id), key)
	})
	return seq, err
}

func (bb boltBooks) CommandsAfter(_ context.Context, target string, after uint64, limit int) ([][]byte, error) {
	var out [][]byte
	err := bb.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(target + "\x00")
		c := tx.Bucket(bucketFleetCommands).Cursor()
		for k, v := c.Seek(fleetKey(target, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			if len(k) == len(prefix)+8 {
				out = append(out, bytes.Clone(v))
			}
		}
		return nil
	})
	return out, err
}

func (bb boltBooks) CommandLog(context.Context) ([][]byte, error) {
	var out [][]byte
	err := bb.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFleetCommands).ForEach(func(_, v []byte) error {
			out = append(out, bytes.Clone(v))
			return nil
		})
	})
	return out, err
}

func (bb boltBooks) Acks(context.Context) ([]protocol.CommandAck, error) {
	var out []protocol.CommandAck
	err := bb.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFleetAcks).ForEach(func(_, v []byte) error {
			_, a, err := strict.DecodeCommandAck(v)
			if err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// bookAck keeps a gateway's latest acknowledgement of a command (by its
// stream seq: a refusal out of order, then the command applied, keeps
// the application).
func bookAck(tx *bolt.Tx, a *protocol.CommandAck, b []byte) error {
	ab := tx.Bucket(bucketFleetAcks)
	k := []byte(a.Command + "\x00" + a.Gateway)
	if old := ab.Get(k); old != nil {
		if _, prev, err := strict.DecodeCommandAck(old); err == nil && (prev.Epoch == a.Epoch && prev.Seq > a.Seq || !prev.Refused && a.Refused) {
			return nil
		}
	}
	return ab.Put(k, b)
}

// forgetAcks drops the answers to commands the restored gateway gave
// after its backup: the restored state file has not applied those
// commands, so the gateway is behind on them again (FleetStatus), and
// gets them again (Republish, or its own cursor).
func forgetAcks(tx *bolt.Tx, r *protocol.Restore) error {
	ab := tx.Bucket(bucketFleetAcks)
	var drop [][]byte
	err := ab.ForEach(func(k, v []byte) error {
		if _, a, err := strict.DecodeCommandAck(v); err == nil && a.Gateway == r.Gateway && a.Epoch == r.OldEpoch && a.Seq > r.OldLastSeq {
			drop = append(drop, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range drop {
		if err == nil {
			err = ab.Delete(k)
		}
	}
	return err
}
