package devicefw

import (
	"math/bits"

	"github.com/farthing-iot/farthing/protocol"
)

// Payword chains on the device: a Chain is made from a seed, commits to
// its anchor, and then gives out its paywords in order, w_1, w_2, …, w_n,
// where w_i = H^(n−i)(seed) — the reverse of the order in which hashing
// makes them. Keeping the whole chain would take n × 32 bytes; recomputing
// each payword from the seed, n hashes per step. A Chain keeps at most
// ChainFrames(n) saved points instead (a binary pebbling: each frame is a
// payword and the stretch of the chain it starts), and spends an amortised
// log2(n)/2 hashes per step; a step that skips indexes skips their
// hashing too. For n = 2^20: 21 frames of 40 bytes (840 bytes), about 10
// hashes per payword on average, and the anchor's n hashes once, when the
// chain is made.

// ChainFrame is one saved point of a Chain: the payword at generation
// position pos (pos hashes from the seed) and how many positions from
// there the frame still has to give out.
type ChainFrame struct {
	w   protocol.Payword
	pos uint32
	len uint32
}

// ChainFrames is the number of frames a Chain of length n (at least 1)
// needs: ⌈log2 n⌉ + 1.
func ChainFrames(n uint32) int { return bits.Len32(n-1) + 1 }

// Chain is a payword chain being spent. It is not safe for concurrent use.
// The zero value is not usable: call Init.
type Chain struct {
	c      protocol.Commitment // the terms, for the commitment and the tickets
	meter  uint8               // index in Config.Meters
	frames []ChainFrame
	top    int    // frames in use
	index  uint32 // last index given out (0: none)
	hashes uint64 // steps hashed since Init, anchor included
}

// Init makes the chain of length n from seed (secret, random, 32 bytes)
// in frames (at least ChainFrames(n) of them, kept by the caller: no
// allocation), for the meter of index meter in the Client's Config, with
// the commitment's terms in c (Device, Chain, Number, Meter, Units, Start,
// Expiry, Epoch; Length and Anchor are filled in). It hashes n times.
func (ch *Chain) Init(c protocol.Commitment, meter uint8, seed protocol.Payword, n uint32, frames []ChainFrame) error {
	if n == 0 || len(frames) < ChainFrames(n) {
		return ErrConfig
	}
	c.Length = n
	if err := c.Validate(); err != nil {
		return err
	}
	ch.c, ch.meter, ch.frames, ch.index, ch.hashes = c, meter, frames, 0, 0
	// Walk from the seed to the anchor, saving the frames the first
	// payword (position n−1) needs on the way: each frame's upper half is
	// split off at its middle.
	ch.frames[0] = ChainFrame{w: seed, pos: 0, len: n}
	ch.top = 1
	w := seed
	for k := uint32(0); ; {
		f := &ch.frames[ch.top-1]
		if f.len > 1 && k == f.pos+f.len/2 {
			h := f.len / 2
			ch.frames[ch.top] = ChainFrame{w: w, pos: k, len: f.len - h}
			f.len = h
			ch.top++
			continue
		}
		if k == n {
			break
		}
		w = protocol.PaywordStep(&ch.c.Chain, &w)
		ch.hashes++
		k++
	}
	ch.c.Anchor = w
	return nil
}

// Commitment returns the chain's commitment terms.
func (ch *Chain) Commitment() *protocol.Commitment { return &ch.c }

// Index is the last index given out (0 before the first).
func (ch *Chain) Index() uint32 { return ch.index }

// Hashes is the number of hash steps spent since Init, the anchor's
// included.
func (ch *Chain) Hashes() uint64 { return ch.hashes }

// Seek returns w_i, for an index above the last one given out and at
// most the chain's length; the indexes between are skipped for good.
func (ch *Chain) Seek(i uint32) (protocol.Payword, error) {
	if i <= ch.index || i > ch.c.Length {
		return protocol.Payword{}, ErrChainIndex
	}
	g := ch.c.Length - i // the generation position of w_i
	for ch.top > 0 {
		f := &ch.frames[ch.top-1]
		switch {
		case g < f.pos: // everything this frame holds comes before index i
			ch.top--
			continue
		case g >= f.pos+f.len:
			return protocol.Payword{}, ErrChainIndex // cannot happen for i > index
		case f.len == 1:
			ch.top--
			ch.index = i
			return f.w, nil
		}
		h := f.len / 2
		if g < f.pos+h {
			f.len = h // the upper half is skipped: nothing to hash
			continue
		}
		w := f.w
		for range h {
			w = protocol.PaywordStep(&ch.c.Chain, &w)
		}
		ch.hashes += uint64(h)
		ch.frames[ch.top] = ChainFrame{w: w, pos: f.pos + h, len: f.len - h}
		f.len = h
		ch.top++
	}
	return protocol.Payword{}, ErrChainIndex
}

// A Chain's state survives a reboot without the anchor's n hashes:
// AppendState writes its index and the frames in use (at most
// ChainStateSize(n) bytes: 862 for n = 2^20) for the firmware to keep in
// flash, and Restore takes them back. The state holds paywords not given
// out yet, which would let whoever reads it claim usage in the device's
// name: keep it where the seed is kept. A state older than the last
// payword sent is safe to restore: the next Seek goes past it.

// chainStateVersion leads a saved state.
const chainStateVersion = 1

// chainStateHead is the fixed part of a saved state: version, chain id,
// number, length, index, frames in use.
const chainStateHead = 1 + protocol.ChainIDLen + 4 + 4 + 4 + 1

// chainFrameSize is a saved frame: payword, position, length.
const chainFrameSize = protocol.PaywordSize + 4 + 4

// ChainStateSize is the most bytes AppendState writes for a chain of
// length n.
func ChainStateSize(n uint32) int { return chainStateHead + ChainFrames(n)*chainFrameSize }

// AppendState appends the chain's state to dst (no allocation when dst
// has room for ChainStateSize of its length).
func (ch *Chain) AppendState(dst []byte) []byte {
	dst = append(dst, chainStateVersion)
	dst = append(dst, ch.c.Chain[:]...)
	dst = appendU32(dst, ch.c.Number)
	dst = appendU32(dst, ch.c.Length)
	dst = appendU32(dst, ch.index)
	dst = append(dst, byte(ch.top))
	for _, f := range ch.frames[:ch.top] {
		dst = append(dst, f.w[:]...)
		dst = appendU32(dst, f.pos)
		dst = appendU32(dst, f.len)
	}
	return dst
}

// Restore takes a chain back from a state AppendState wrote, in frames (at
// least ChainFrames(c.Length)), with its commitment's terms as committed
// (Length and Anchor included) and the meter's index in the Client's
// Config. A state of another chain, number or length, or one that does
// not hold together, is ErrChainState; nothing is hashed.
func (ch *Chain) Restore(c protocol.Commitment, meter uint8, state []byte, frames []ChainFrame) error {
	if err := c.Validate(); err != nil {
		return err
	}
	n := c.Length
	if len(frames) < ChainFrames(n) {
		return ErrConfig
	}
	if len(state) < chainStateHead || state[0] != chainStateVersion || protocol.ChainID(state[1:1+protocol.ChainIDLen]) != c.Chain {
		return ErrChainState
	}
	b := state[1+protocol.ChainIDLen:]
	number, length, index, top := u32(b), u32(b[4:]), u32(b[8:]), int(b[12])
	b = b[13:]
	if number != c.Number || length != n || index > n || top > ChainFrames(n) || len(b) != top*chainFrameSize {
		return ErrChainState
	}
	for i := range top {
		f := ChainFrame{pos: u32(b[protocol.PaywordSize:]), len: u32(b[protocol.PaywordSize+4:])}
		copy(f.w[:], b)
		// A frame holds generation positions [pos, pos+len), that is
		// indexes n−pos down to n−pos−len+1: all after the last one given
		// out.
		if f.len == 0 || uint64(f.pos)+uint64(f.len) > uint64(n-index) {
			return ErrChainState
		}
		frames[i] = f
		b = b[chainFrameSize:]
	}
	ch.c, ch.meter, ch.frames, ch.top, ch.index, ch.hashes = c, meter, frames, top, index, 0
	return nil
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func u32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Commit signs the chain's commitment with the Client's signer and
// appends it to dst: send it (on the ticket topic, or POST it to the
// ticket path) before the chain's first payword. Its receipt carries seq
// protocol.PaywordSeq(number, 0).
func (c *Client) Commit(dst []byte, ch *Chain) ([]byte, error) {
	return c.enc.AppendCommitment(dst, &ch.c, c.cfg.Signer)
}

// ReportPayword moves the chain to index i (its register is then Start +
// i × Units), keeps the payword ticket pending until a final receipt
// answers it, and returns the bytes to send and its seq. Like Report, it
// drops older pending tickets of the same meter that this one covers.
func (c *Client) ReportPayword(ch *Chain, i uint32) ([]byte, uint64, error) {
	if int(ch.meter) >= len(c.cfg.Meters) || c.cfg.Meters[ch.meter] != ch.c.Meter || ch.c.Device != c.cfg.Device {
		return nil, 0, ErrConfig
	}
	if c.ring.n == 0 {
		return nil, 0, ErrConfig
	}
	meters := uint16(1) << ch.meter
	slotIndex := c.ring.pick(meters, ch.c.Epoch)
	if slotIndex < 0 {
		return nil, 0, ErrPendingFull
	}
	w, err := ch.Seek(i)
	if err != nil {
		return nil, 0, err
	}
	t := protocol.PaywordTicket{Device: c.cfg.Device, Chain: ch.c.Chain, Index: i, Word: w}
	seq := protocol.PaywordSeq(ch.c.Number, i)
	c.ring.slots[slotIndex] = slot{}
	out, err := protocol.AppendPaywordTicket(c.ring.buf(slotIndex)[:0], &t)
	if err != nil {
		return nil, 0, err
	}
	if len(out) > c.ring.size || &out[0] != &c.ring.arena[slotIndex*c.ring.size] {
		return nil, 0, ErrSlotTooSmall
	}
	c.ring.slots[slotIndex] = slot{seq: seq, epoch: ch.c.Epoch, meters: meters, n: uint16(len(out))}
	c.ring.supersede()
	return out, seq, nil
}
