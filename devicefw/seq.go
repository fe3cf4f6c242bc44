package devicefw

import "github.com/farthing-iot/farthing/protocol"

// SeqStore persists the sequence reservation: a seq at or past every seq
// the device has ever used. Firmware implements it over flash, EEPROM or
// battery-backed RAM. SaveSeq is called once every Config.Reserve tickets,
// so flash wears Reserve times slower than writing every seq.
type SeqStore interface {
	// LoadSeq returns the last value saved, or 0 if none was.
	LoadSeq() (uint64, error)
	// SaveSeq durably stores next; it must not return before the value
	// would survive a power loss.
	SaveSeq(next uint64) error
}

// DefaultReserve is how many seqs one flash write reserves.
const DefaultReserve = 100

// sequencer issues seqs that never repeat across power losses.
//
// Invariant: every seq issued is < limit, and limit has been saved before
// any seq ≥ the previously saved value is issued. After a reboot next
// starts at the saved limit, past everything issued before; the unissued
// rest of the last reservation is skipped (gaps are allowed).
type sequencer struct {
	store   SeqStore
	reserve uint64
	next    uint64 // the next seq to issue
	limit   uint64 // seqs < limit are covered by a saved reservation
}

func (s *sequencer) init(store SeqStore, reserve uint64) error {
	s.store, s.reserve = store, reserve
	v, err := store.LoadSeq()
	if err != nil {
		return ErrSeqStore
	}
	if v == 0 {
		v = 1
	}
	s.next, s.limit = v, v
	return nil
}

// take issues the next seq, saving a new reservation first when needed.
func (s *sequencer) take() (uint64, error) {
	if s.next > protocol.MaxSeq {
		return 0, ErrSeqExhausted
	}
	if s.next >= s.limit {
		limit := s.next + s.reserve
		if limit > protocol.MaxSeq+1 || limit < s.next {
			limit = protocol.MaxSeq + 1
		}
		if err := s.store.SaveSeq(limit); err != nil {
			return 0, ErrSeqStore
		}
		s.limit = limit
	}
	seq := s.next
	s.next++
	return seq, nil
}
