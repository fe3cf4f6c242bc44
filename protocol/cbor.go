package protocol

// This file holds the one CBOR encoder and the one canonical reader of the
// device path. They know only the subset of RFC 8949 that Farthing messages
// use: unsigned and negative integers, byte and text strings, arrays, maps
// and tags, all with definite lengths.
//
// Encoding follows the core deterministic rules of RFC 8949 section 4.2.1:
// every argument in its shortest form, no indefinite lengths, map keys in
// bytewise lexicographic order of their encodings (for the small
// non-negative integer keys used here that is numeric order). The reader
// accepts only such encodings, so a message that it accepts re-encodes to
// the same bytes.

// CBOR major types (RFC 8949 section 3.1), shifted into the initial byte.
const (
	majorUint   byte = 0 << 5
	majorNegInt byte = 1 << 5
	majorBytes  byte = 2 << 5
	majorText   byte = 3 << 5
	majorArray  byte = 4 << 5
	majorMap    byte = 5 << 5
	majorTag    byte = 6 << 5
)

// appendHead appends a data item head with its argument in the shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return append(b, major|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, major|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// headLen is the length of the head appendHead writes for argument n.
func headLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	default:
		return 9
	}
}

func appendUint(b []byte, n uint64) []byte { return appendHead(b, majorUint, n) }

func appendInt(b []byte, n int64) []byte {
	if n >= 0 {
		return appendHead(b, majorUint, uint64(n))
	}
	return appendHead(b, majorNegInt, uint64(-(n + 1)))
}

func appendText(b []byte, s string) []byte {
	b = appendHead(b, majorText, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = appendHead(b, majorBytes, uint64(len(p)))
	return append(b, p...)
}

// reader decodes canonical CBOR from b. The first failure is kept in err and
// every later call returns zero values, so a parser can read a whole
// structure and check err once.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(reason Reason, detail string) {
	if r.err == nil {
		r.err = &Error{Reason: reason, Detail: keepDetail(detail)}
	}
}

// head reads a data item head. It refuses indefinite lengths, reserved
// additional-information values and arguments not in their shortest form.
func (r *reader) head() (major byte, arg uint64) {
	if r.err != nil {
		return 0, 0
	}
	if r.off >= len(r.b) {
		r.fail(ReasonMalformed, "unexpected end of data")
		return 0, 0
	}
	ib := r.b[r.off]
	r.off++
	major, ai := ib&0xe0, ib&0x1f
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai)
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	case ai == 31:
		r.fail(ReasonNonCanonical, "indefinite length")
		return 0, 0
	default:
		r.fail(ReasonMalformed, "reserved additional information")
		return 0, 0
	}
	if len(r.b)-r.off < n {
		r.fail(ReasonMalformed, "unexpected end of data")
		return 0, 0
	}
	for i := 0; i < n; i++ {
		arg = arg<<8 | uint64(r.b[r.off+i])
	}
	r.off += n
	if headLen(arg) != 1+n {
		r.fail(ReasonNonCanonical, "integer not in shortest form")
		return 0, 0
	}
	if major == 7<<5 {
		r.fail(ReasonMalformed, "simple values and floats are not used")
		return 0, 0
	}
	return major, arg
}

func (r *reader) expect(major byte, what string) uint64 {
	m, n := r.head()
	if r.err == nil && m != major {
		r.fail(ReasonMalformed, what+" has the wrong type")
		return 0
	}
	return n
}

func (r *reader) uint(what string) uint64 { return r.expect(majorUint, what) }

func (r *reader) int(what string) int64 {
	m, n := r.head()
	if r.err != nil {
		return 0
	}
	switch {
	case m == majorUint && n <= 1<<63-1:
		return int64(n)
	case m == majorNegInt && n <= 1<<63-1:
		return -int64(n) - 1
	}
	r.fail(ReasonFieldRange, what+" is not a 64-bit signed integer")
	return 0
}

// span reads a byte or text string of at most max bytes and returns it
// without copying.
func (r *reader) span(major byte, max int, what string) []byte {
	n := r.expect(major, what)
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(ReasonStringTooLong, what+" is too long")
		return nil
	}
	if uint64(len(r.b)-r.off) < n {
		r.fail(ReasonMalformed, "unexpected end of data")
		return nil
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p
}

func (r *reader) bytes(max int, what string) []byte { return r.span(majorBytes, max, what) }

// fixed reads a byte string of exactly len(dst) bytes into dst.
func (r *reader) fixed(dst []byte, what string) {
	if b := r.bytes(len(dst), what); r.err == nil {
		if len(b) != len(dst) {
			r.fail(ReasonFieldRange, what+" is not "+itoa(int64(len(dst)))+" bytes")
		}
		copy(dst, b)
	}
}

// text reads a text string and checks it against the identifier alphabet.
func (r *reader) text(max int, what string) []byte {
	p := r.span(majorText, max, what)
	if r.err == nil {
		if err := checkName(p, max, what); err != nil {
			r.err = err
		}
	}
	return p
}

// mapKeys walks the keys of a map of n entries, requiring them strictly
// ascending, which also rules out duplicates.
type mapKeys struct {
	r    *reader
	left uint64
	last int64
}

func (r *reader) mapOf(max int, what string) mapKeys {
	n := r.expect(majorMap, what)
	if n > uint64(max) {
		r.fail(ReasonMalformed, what+" has too many entries")
		n = 0
	}
	return mapKeys{r: r, left: n, last: -1}
}

// next reads the next key, or returns false when the map is done or broken.
func (k *mapKeys) next() (int64, bool) {
	if k.left == 0 || k.r.err != nil {
		return 0, false
	}
	k.left--
	key := k.r.uint("map key")
	if k.r.err != nil {
		return 0, false
	}
	if key > 1<<31 || int64(key) <= k.last {
		k.r.fail(ReasonNonCanonical, "map keys not in ascending order or duplicated")
		return 0, false
	}
	k.last = int64(key)
	return int64(key), true
}

func (r *reader) done() {
	if r.err == nil && r.off != len(r.b) {
		r.fail(ReasonMalformed, "trailing bytes after message")
	}
}
