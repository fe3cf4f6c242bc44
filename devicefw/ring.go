package devicefw

// MaxPending is the most unacknowledged tickets a Client keeps.
const MaxPending = 32

// slot describes one pending ticket; its bytes live in the arena at
// index*size.
type slot struct {
	seq    uint64 // 0 when the slot is free
	epoch  uint64
	meters uint16 // bit i set: the ticket carries meter i
	n      uint16 // encoded length
}

// ring keeps unacknowledged tickets in a caller-provided arena of fixed-size
// slots. It is not ordered in memory; seqs order it.
type ring struct {
	arena []byte
	size  int
	slots [MaxPending]slot
	n     int // number of slots the arena holds
}

func (r *ring) init(arena []byte, size int) {
	r.arena, r.size = arena, size
	r.n = len(arena) / size
	if r.n > MaxPending {
		r.n = MaxPending
	}
}

func (r *ring) buf(i int) []byte { return r.arena[i*r.size : (i+1)*r.size : (i+1)*r.size] }

func (r *ring) bytes(i int) []byte { return r.arena[i*r.size : i*r.size+int(r.slots[i].n)] }

// covered reports whether every meter of slot i is carried by a pending
// ticket of the same epoch with a higher seq, or by extra (a ticket about to
// be added with seq extraSeq, epoch extraEpoch).
func (r *ring) covered(i int, extra uint16, extraEpoch uint64) bool {
	s := r.slots[i]
	var union uint16
	if extraEpoch == s.epoch {
		union = extra
	}
	for j := 0; j < r.n; j++ {
		o := r.slots[j]
		if o.seq > s.seq && o.epoch == s.epoch {
			union |= o.meters
		}
	}
	return s.meters&^union == 0
}

// pick returns the slot for a new ticket with meters and epoch: a free one,
// or else the oldest ticket that newer ones (the new one included) cover;
// -1 if every pending ticket is still needed. It changes nothing: the
// caller overwrites the slot only once the new ticket is built.
func (r *ring) pick(meters uint16, epoch uint64) int {
	victim := -1
	for i := 0; i < r.n; i++ {
		if r.slots[i].seq == 0 {
			return i
		}
		if r.covered(i, meters, epoch) && (victim < 0 || r.slots[i].seq < r.slots[victim].seq) {
			victim = i
		}
	}
	return victim
}

// supersede drops every pending ticket whose meters newer tickets cover.
func (r *ring) supersede() {
	for i := 0; i < r.n; i++ {
		if r.slots[i].seq != 0 && r.covered(i, 0, 0) {
			r.slots[i] = slot{}
		}
	}
}

func (r *ring) find(seq uint64) int {
	if seq == 0 {
		return -1 // free slots hold seq 0; no ticket has it
	}
	for i := 0; i < r.n; i++ {
		if r.slots[i].seq == seq {
			return i
		}
	}
	return -1
}

// next returns the pending slot with the smallest seq greater than after.
func (r *ring) next(after uint64) int {
	best := -1
	for i := 0; i < r.n; i++ {
		s := r.slots[i].seq
		if s > after && (best < 0 || s < r.slots[best].seq) {
			best = i
		}
	}
	return best
}

func (r *ring) count() int {
	c := 0
	for i := 0; i < r.n; i++ {
		if r.slots[i].seq != 0 {
			c++
		}
	}
	return c
}
