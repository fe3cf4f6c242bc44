package protocol

// Number formatting without package strconv, whose tables cost a firmware
// build about 2 KB of flash for the few numbers this package prints.

// appendUintBase appends n in base 10 or 16 (lower-case digits).
func appendUintBase(b []byte, n uint64, base uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = "0123456789abcdef"[n%base]
		n /= base
		if n == 0 {
			return append(b, d[i:]...)
		}
	}
}

// itoa is n in base 10.
func itoa(n int64) string {
	if n < 0 {
		return string(appendUintBase([]byte{'-'}, uint64(-n), 10))
	}
	return string(appendUintBase(nil, uint64(n), 10))
}
