/*
 * harness.c: drives farthing.c from a test, one command per line on
 * stdin, one answer per line on stdout (hex, or "err CODE"). The Go test
 * devicefw/c_test.go builds it with gcc and clang, with AddressSanitizer
 * and UndefinedBehaviorSanitizer, and checks every answer against the Go
 * client and the shared test vectors.
 *
 *   ticket KEY DEVICE SEQ TIME EPOCH ACCOUNT SESSION GRANT METER REG [METER REG...]
 *          (KEY: the HMAC ticket key in hex, or "ed:" and the Ed25519 public key in hex, whose
 *          signature is asked for on stdout as "sign TBS" and read back as a hex line; "-" for
 *          an absent account or session)
 *   receipt KEY HEX        -> "ok SEQ STATUS REASON CHARGED BALANCE HAS_BALANCE CURRENCY RETRY VOUCHER LOW TIME NONCE"
 *   derive MASTER PURPOSE  -> the key (PURPOSE with '+' for spaces)
 *   kid ALG KEY            -> the key id
 *   payword DEVICE CHAIN INDEX WORD -> the payword ticket
 *   step CHAIN WORD        -> H(WORD)
 *   seq SAVED N            -> N seqs after a boot with SAVED in flash, then "saved S WRITES"
 */
#include "../farthing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unhex(const char *s, uint8_t *out, size_t max) {
	size_t n = strlen(s), i;
	if (n % 2 != 0 || n / 2 > max) {
		return -1;
	}
	for (i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1) {
			return -1;
		}
		out[i] = (uint8_t)v;
	}
	return (int)(n / 2);
}

static void puthex(const uint8_t *p, size_t n) {
	size_t i;
	for (i = 0; i < n; i++) {
		printf("%02x", p[i]);
	}
}

/* sign asks the test for an Ed25519 signature of msg. */
static int sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]) {
	char line[256];
	(void)ctx;
	printf("sign ");
	puthex(msg, len);
	printf("\n");
	fflush(stdout);
	if (fgets(line, sizeof line, stdin) == NULL) {
		return -1;
	}
	line[strcspn(line, "\n")] = 0;
	return unhex(line, sig, 64) == 64 ? 0 : -1;
}

static char *tok(char **s) { return strtok_r(NULL, " ", s); }

static void do_ticket(char **sp) {
	static uint8_t buf[FARTHING_MAX_TICKET + 64];
	farthing_reading rd[FARTHING_MAX_READINGS + 1];
	farthing_ticket t;
	farthing_signer s;
	uint8_t key[32];
	char *k = tok(sp), *acc, *ses, *m;
	size_t len = 0;
	int err;
	memset(&t, 0, sizeof t);
	if (strncmp(k, "ed:", 3) == 0) {
		unhex(k + 3, key, 32);
		farthing_signer_ed25519(&s, key, sign, NULL);
	} else {
		unhex(k, key, 32);
		farthing_signer_hmac(&s, key);
	}
	t.device = tok(sp);
	t.seq = strtoull(tok(sp), NULL, 10);
	t.time_ms = strtoull(tok(sp), NULL, 10);
	t.epoch = strtoull(tok(sp), NULL, 10);
	acc = tok(sp), ses = tok(sp);
	t.account = strcmp(acc, "-") == 0 ? NULL : acc;
	t.session = strcmp(ses, "-") == 0 ? NULL : ses;
	t.grant = strtoull(tok(sp), NULL, 10);
	while ((m = tok(sp)) != NULL && t.n_readings <= FARTHING_MAX_READINGS) {
		rd[t.n_readings].meter = m;
		rd[t.n_readings++].reg = strtoull(tok(sp), NULL, 10);
	}
	t.readings = rd;
	err = farthing_ticket_encode(&t, &s, buf, sizeof buf, &len);
	if (err != FARTHING_OK) {
		printf("err %d\n", err);
		return;
	}
	puthex(buf, len);
	printf("\n");
}

static void do_receipt(char **sp) {
	static uint8_t b[4096];
	uint8_t key[32];
	farthing_receipt r;
	int n, err;
	unhex(tok(sp), key, 32);
	n = unhex(tok(sp), b, sizeof b);
	/* the receipt alone in a heap block of its size, so AddressSanitizer sees a read past it */
	{
		uint8_t *exact = malloc(n > 0 ? (size_t)n : 1);
		memcpy(exact, b, n > 0 ? (size_t)n : 0);
		err = farthing_receipt_parse(exact, n > 0 ? (size_t)n : 0, key, &r);
		free(exact);
	}
	if (err != FARTHING_OK) {
		printf("err %d\n", err);
		return;
	}
	printf("ok %llu %d %d %llu %lld %d %s %lu %s %d %llu ", (unsigned long long)r.seq, r.status, r.reason,
		(unsigned long long)r.charged, (long long)r.balance, r.has_balance, r.currency[0] ? r.currency : "-",
		(unsigned long)r.retry_after, r.voucher[0] ? r.voucher : "-", r.low_balance, (unsigned long long)r.time_ms);
	puthex(r.nonce, 8);
	printf(" %s\n", r.device);
}

static int flash_writes;
static uint64_t flash_value;
static int save(void *ctx, uint64_t next) {
	(void)ctx;
	flash_value = next;
	flash_writes++;
	return 0;
}

static void do_seq(char **sp) {
	farthing_seq q;
	uint64_t saved = strtoull(tok(sp), NULL, 10), v;
	long n = strtol(tok(sp), NULL, 10), i;
	flash_writes = 0, flash_value = saved;
	farthing_seq_init(&q, saved, save, NULL);
	for (i = 0; i < n; i++) {
		if (farthing_seq_take(&q, &v) != FARTHING_OK) {
			printf("err\n");
			return;
		}
		printf("%llu ", (unsigned long long)v);
	}
	printf("saved %llu %d\n", (unsigned long long)flash_value, flash_writes);
}

int main(void) {
	char line[8192];
	while (fgets(line, sizeof line, stdin) != NULL) {
		char *sp, *cmd;
		uint8_t a[64], b[64], out[128];
		size_t len = 0;
		line[strcspn(line, "\n")] = 0;
		cmd = strtok_r(line, " ", &sp);
		if (cmd == NULL) {
			continue;
		}
		if (strcmp(cmd, "ticket") == 0) {
			do_ticket(&sp);
		} else if (strcmp(cmd, "receipt") == 0) {
			do_receipt(&sp);
		} else if (strcmp(cmd, "derive") == 0) {
			char *p, *q;
			unhex(tok(&sp), a, 32);
			p = tok(&sp);
			for (q = p; *q; q++) {
				if (*q == '+') {
					*q = ' ';
				}
			}
			farthing_derive_key(a, p, out);
			puthex(out, 32), printf("\n");
		} else if (strcmp(cmd, "kid") == 0) {
			int alg = atoi(tok(&sp));
			int n = unhex(tok(&sp), a, 64);
			farthing_key_id(alg, a, (size_t)n, out);
			puthex(out, 8), printf("\n");
		} else if (strcmp(cmd, "step") == 0) {
			unhex(tok(&sp), a, 8);
			unhex(tok(&sp), b, 32);
			farthing_payword_step(a, b, out);
			puthex(out, 32), printf("\n");
		} else if (strcmp(cmd, "payword") == 0) {
			char *dev = tok(&sp);
			uint32_t idx;
			int err;
			unhex(tok(&sp), a, 8);
			idx = (uint32_t)strtoul(tok(&sp), NULL, 10);
			unhex(tok(&sp), b, 32);
			err = farthing_payword_encode(dev, a, idx, b, out, sizeof out, &len);
			if (err != FARTHING_OK) {
				printf("err %d\n", err);
			} else {
				puthex(out, len), printf("\n");
			}
		} else if (strcmp(cmd, "seq") == 0) {
			do_seq(&sp);
		} else {
			printf("err unknown command\n");
		}
		fflush(stdout);
	}
	return 0;
}
