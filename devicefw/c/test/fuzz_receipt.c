/*
 * fuzz_receipt.c: a libFuzzer target for the C client's receipt parser.
 * Built by devicefw/c_test.go with clang -fsanitize=fuzzer,address,undefined
 * and run for a bounded count over the corpus in devicefw/c/testdata.
 * Whatever the bytes, the parser returns OK or a reason code of the wire
 * format, reads nothing outside them, and an accepted receipt is whole.
 */
#include "../farthing.h"

#include <stdlib.h>

/* The HMAC key of protocol/testdata/vectors.json, so that its receipts
 * verify and mutations of them reach every field. */
static const uint8_t key[32] = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
	0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
	farthing_receipt r;
	int err = farthing_receipt_parse(data, size, key, &r);
	if (err < 0 || err > 100) {
		abort(); /* a refusal is a reason code */
	}
	if (err == FARTHING_OK && (r.device[0] == 0 || r.status < 0 || r.status > FARTHING_HELD || size > FARTHING_MAX_RECEIPT)) {
		abort(); /* an accepted receipt is whole */
	}
	return 0;
}
