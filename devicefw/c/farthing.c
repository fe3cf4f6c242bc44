/*
 * farthing.c: the Farthing device client in C99. See farthing.h.
 *
 * The encoders follow RFC 8949 section 4.2.1 (shortest forms, definite
 * lengths, map keys ascending); the receipt reader accepts only that
 * encoding, as the Go client's does (protocol/cbor.go), so one receipt
 * has one encoding.
 */
#include "farthing.h"

#include <string.h>

/* ---- SHA-256 -------------------------------------------------------- */

#ifndef FARTHING_EXTERNAL_SHA256
static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(uint32_t h[8], const uint8_t *p) {
	uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
	int i;
	for (i = 0; i < 16; i++) {
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	}
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (i = 0; i < 64; i++) {
		t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void farthing_sha256_init(farthing_sha256 *s) {
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(s->h, iv, sizeof iv);
	s->len = 0;
	s->n = 0;
}

void farthing_sha256_update(farthing_sha256 *s, const uint8_t *p, size_t n) {
	s->len += n;
	while (n > 0) {
		size_t take = 64 - s->n;
		if (take > n) {
			take = n;
		}
		memcpy(s->buf + s->n, p, take);
		s->n += take, p += take, n -= take;
		if (s->n == 64) {
			sha_block(s->h, s->buf);
			s->n = 0;
		}
	}
}

void farthing_sha256_final(farthing_sha256 *s, uint8_t out[32]) {
	uint64_t bits = s->len * 8;
	uint8_t pad[72];
	size_t padn = (s->n < 56 ? 56 : 120) - s->n;
	int i;
	memset(pad, 0, sizeof pad);
	pad[0] = 0x80;
	for (i = 0; i < 8; i++) {
		pad[padn + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
	}
	farthing_sha256_update(s, pad, padn + 8);
	for (i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(s->h[i] >> 24), out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(s->h[i] >> 8), out[4 * i + 3] = (uint8_t)s->h[i];
	}
}
#endif

/* ---- HMAC, HKDF, key ids -------------------------------------------- */

void farthing_hmac_init(farthing_hmac *h, const uint8_t *key, size_t keylen) {
	uint8_t ikey[64];
	size_t i;
	memset(ikey, 0, sizeof ikey);
	memcpy(ikey, key, keylen > 64 ? 64 : keylen);
	for (i = 0; i < 64; i++) {
		h->okey[i] = ikey[i] ^ 0x5c;
		ikey[i] ^= 0x36;
	}
	farthing_sha256_init(&h->inner);
	farthing_sha256_update(&h->inner, ikey, 64);
}

void farthing_hmac_update(farthing_hmac *h, const uint8_t *p, size_t n) { farthing_sha256_update(&h->inner, p, n); }

void farthing_hmac_final(farthing_hmac *h, uint8_t out[32]) {
	farthing_sha256 outer;
	farthing_sha256_final(&h->inner, out);
	farthing_sha256_init(&outer);
	farthing_sha256_update(&outer, h->okey, 64);
	farthing_sha256_update(&outer, out, 32);
	farthing_sha256_final(&outer, out);
}

void farthing_derive_key(const uint8_t master[FARTHING_KEY_SIZE], const char *purpose, uint8_t out[FARTHING_KEY_SIZE]) {
	static const uint8_t zero_salt[32];
	static const uint8_t one = 1;
	uint8_t prk[32];
	farthing_hmac h;
	farthing_hmac_init(&h, zero_salt, sizeof zero_salt); /* HKDF-Extract, no salt */
	farthing_hmac_update(&h, master, FARTHING_KEY_SIZE);
	farthing_hmac_final(&h, prk);
	farthing_hmac_init(&h, prk, sizeof prk); /* HKDF-Expand: T(1) is 32 bytes */
	farthing_hmac_update(&h, (const uint8_t *)purpose, strlen(purpose));
	farthing_hmac_update(&h, &one, 1);
	farthing_hmac_final(&h, out);
}

void farthing_key_id(int alg, const uint8_t *key, size_t keylen, uint8_t kid[FARTHING_KID_SIZE]) {
	static const char label[] = "farthing kid v1";
	uint8_t a = alg >= 0 ? (uint8_t)alg : (uint8_t)(0x20 | (-1 - alg)); /* CBOR of a small int */
	uint8_t sum[32];
	farthing_sha256 s;
	farthing_sha256_init(&s);
	farthing_sha256_update(&s, (const uint8_t *)label, sizeof label - 1);
	farthing_sha256_update(&s, &a, 1);
	farthing_sha256_update(&s, key, keylen);
	farthing_sha256_final(&s, sum);
	memcpy(kid, sum, FARTHING_KID_SIZE);
}

void farthing_signer_hmac(farthing_signer *s, const uint8_t ticket_key[FARTHING_KEY_SIZE]) {
	memset(s, 0, sizeof *s);
	s->alg = FARTHING_ALG_HMAC256;
	memcpy(s->key, ticket_key, FARTHING_KEY_SIZE);
	farthing_key_id(s->alg, ticket_key, FARTHING_KEY_SIZE, s->kid);
}

void farthing_signer_ed25519(farthing_signer *s, const uint8_t public_key[32], farthing_sign_fn sign, void *ctx) {
	memset(s, 0, sizeof *s);
	s->alg = FARTHING_ALG_EDDSA;
	s->sign = sign;
	s->sign_ctx = ctx;
	farthing_key_id(s->alg, public_key, 32, s->kid);
}

/* ---- The sequence counter ------------------------------------------- */

void farthing_seq_init(farthing_seq *q, uint64_t saved, farthing_seq_save_fn save, void *ctx) {
	q->next = q->limit = saved == 0 ? 1 : saved;
	q->save = save;
	q->ctx = ctx;
}

int farthing_seq_take(farthing_seq *q, uint64_t *seq) {
	if (q->next > FARTHING_MAX_SEQ) {
		return FARTHING_ERR_SEQ;
	}
	if (q->next >= q->limit) {
		uint64_t limit = q->next + FARTHING_SEQ_RESERVE;
		if (limit > FARTHING_MAX_SEQ + 1) {
			limit = FARTHING_MAX_SEQ + 1;
		}
		if (q->save(q->ctx, limit) != 0) {
			return FARTHING_ERR_SEQ;
		}
		q->limit = limit;
	}
	*seq = q->next++;
	return FARTHING_OK;
}

/* ---- CBOR writing --------------------------------------------------- */

typedef struct {
	uint8_t *b;
	size_t cap, n;
	int err;
} writer;

static void put(writer *w, const uint8_t *p, size_t n) {
	if (w->err || n > w->cap - w->n) {
		w->err = 1;
		return;
	}
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void head(writer *w, uint8_t major, uint64_t v) {
	uint8_t h[9];
	size_t n = 1, i;
	if (v < 24) {
		h[0] = (uint8_t)(major | v);
	} else {
		n = v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
		h[0] = (uint8_t)(major | (n == 2 ? 24 : n == 3 ? 25 : n == 5 ? 26 : 27));
		for (i = 1; i < n; i++) {
			h[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
		}
	}
	put(w, h, n);
}

static void text(writer *w, const char *s) {
	size_t n = strlen(s);
	head(w, 0x60, n);
	put(w, (const uint8_t *)s, n);
}

static void bytes(writer *w, const uint8_t *p, size_t n) {
	head(w, 0x40, n);
	put(w, p, n);
}

/* name_ok: 1..max bytes of [A-Za-z0-9._-]. */
static int name_ok(const char *s, size_t max) {
	size_t n = 0;
	if (s == NULL) {
		return 0;
	}
	for (; s[n] != 0; n++) {
		char c = s[n];
		if (n >= max || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
			return 0;
		}
	}
	return n > 0;
}

/* ---- Tickets -------------------------------------------------------- */

static int ticket_ok(const farthing_ticket *t) {
	size_t i, j;
	if (!name_ok(t->device, FARTHING_MAX_ID) || t->seq == 0 || t->seq > FARTHING_MAX_SEQ || t->time_ms == 0 ||
		t->n_readings == 0 || t->n_readings > FARTHING_MAX_READINGS || t->grant > FARTHING_MAX_SEQ ||
		(t->account != NULL && !name_ok(t->account, FARTHING_MAX_ID)) || (t->session != NULL && !name_ok(t->session, FARTHING_MAX_ID))) {
		return 0;
	}
	for (i = 0; i < t->n_readings; i++) {
		if (!name_ok(t->readings[i].meter, FARTHING_MAX_METER)) {
			return 0;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(t->readings[i].meter, t->readings[j].meter) == 0) {
				return 0;
			}
		}
	}
	return 1;
}

static void ticket_payload(writer *w, const farthing_ticket *t) {
	size_t i;
	head(w, 0xa0, 5 + (t->epoch != 0) + (t->account != NULL) + (t->session != NULL) + (t->grant != 0));
	head(w, 0, 0), head(w, 0, 1); /* kind: ticket */
	head(w, 0, 1), text(w, t->device);
	head(w, 0, 2), head(w, 0, t->seq);
	head(w, 0, 3), head(w, 0, t->time_ms);
	if (t->epoch != 0) {
		head(w, 0, 4), head(w, 0, t->epoch);
	}
	head(w, 0, 5), head(w, 0x80, t->n_readings);
	for (i = 0; i < t->n_readings; i++) {
		head(w, 0x80, 2), text(w, t->readings[i].meter), head(w, 0, t->readings[i].reg);
	}
	if (t->account != NULL) {
		head(w, 0, 6), text(w, t->account);
	}
	if (t->session != NULL) {
		head(w, 0, 7), text(w, t->session);
	}
	if (t->grant != 0) {
		head(w, 0, 8), head(w, 0, t->grant);
	}
}

/* The room left before a payload for the envelope's head or the
 * to-be-signed prefix (the longer): array, "Signature1", protected
 * header, empty external_aad, payload head. */
#define ROOM 32

/* protected writes the protected header {1: alg, 4: kid}. */
static void protected_header(writer *w, const farthing_signer *s) {
	head(w, 0xa0, 2);
	head(w, 0, 1);
	head(w, s->alg < 0 ? 0x20 : 0, (uint64_t)(s->alg < 0 ? -1 - s->alg : s->alg));
	head(w, 0, 4);
	bytes(w, s->kid, FARTHING_KID_SIZE);
}

/* seal MACs or signs the payload at buf[ROOM:ROOM+pl] and writes the
 * tagged COSE message from buf[0]. */
static int seal(const farthing_signer *s, uint8_t *buf, size_t cap, size_t pl, size_t *len) {
	uint8_t prot[16], pre[ROOM], hdr[ROOM], sig[64];
	writer pw = {prot, sizeof prot, 0, 0}, tw = {pre, sizeof pre, 0, 0}, hw = {hdr, sizeof hdr, 0, 0};
	size_t siglen = s->alg == FARTHING_ALG_EDDSA ? 64 : 32;
	protected_header(&pw, s);
	head(&tw, 0x80, 4);
	text(&tw, s->alg == FARTHING_ALG_EDDSA ? "Signature1" : "MAC0");
	bytes(&tw, prot, pw.n);
	head(&tw, 0x40, 0);
	head(&tw, 0x40, pl);
	if (s->alg == FARTHING_ALG_HMAC256) {
		farthing_hmac h;
		farthing_hmac_init(&h, s->key, FARTHING_KEY_SIZE);
		farthing_hmac_update(&h, pre, tw.n);
		farthing_hmac_update(&h, buf + ROOM, pl);
		farthing_hmac_final(&h, sig);
	} else {
		memcpy(buf + ROOM - tw.n, pre, tw.n); /* the Sig_structure, whole, for the caller's function */
		if (s->sign == NULL || s->sign(s->sign_ctx, buf + ROOM - tw.n, tw.n + pl, sig) != 0) {
			return FARTHING_ERR_SIGN;
		}
	}
	head(&hw, 0xc0, s->alg == FARTHING_ALG_EDDSA ? 18 : 17);
	head(&hw, 0x80, 4);
	bytes(&hw, prot, pw.n);
	head(&hw, 0xa0, 0);
	head(&hw, 0x40, pl);
	if (hw.n + pl + 2 + siglen > cap || hw.n + pl + 2 + siglen > FARTHING_MAX_TICKET) {
		return FARTHING_ERR_BUFFER;
	}
	memmove(buf + hw.n, buf + ROOM, pl);
	memcpy(buf, hdr, hw.n);
	buf[hw.n + pl] = 0x58;
	buf[hw.n + pl + 1] = (uint8_t)siglen;
	memcpy(buf + hw.n + pl + 2, sig, siglen);
	*len = hw.n + pl + 2 + siglen;
	return FARTHING_OK;
}

int farthing_ticket_encode(const farthing_ticket *t, const farthing_signer *s, uint8_t *buf, size_t cap, size_t *len) {
	writer w;
	if (!ticket_ok(t) || (s->alg != FARTHING_ALG_HMAC256 && s->alg != FARTHING_ALG_EDDSA)) {
		return FARTHING_ERR_ARG;
	}
	if (cap < ROOM) {
		return FARTHING_ERR_BUFFER;
	}
	w.b = buf + ROOM;
	w.cap = cap - ROOM;
	w.n = 0;
	w.err = 0;
	ticket_payload(&w, t);
	if (w.err) {
		return FARTHING_ERR_BUFFER;
	}
	return seal(s, buf, cap, w.n, len);
}

/* ---- Payword tickets ------------------------------------------------ */

void farthing_payword_step(const uint8_t chain[8], const uint8_t w[32], uint8_t out[32]) {
	farthing_sha256 s;
	farthing_sha256_init(&s);
	farthing_sha256_update(&s, (const uint8_t *)"FPW1", 4);
	farthing_sha256_update(&s, chain, 8);
	farthing_sha256_update(&s, w, 32);
	farthing_sha256_final(&s, out);
}

int farthing_payword_encode(const char *device, const uint8_t chain[8], uint32_t index, const uint8_t word[32],
	uint8_t *buf, size_t cap, size_t *len) {
	writer w = {buf, cap, 0, 0};
	if (!name_ok(device, FARTHING_MAX_ID) || index == 0) {
		return FARTHING_ERR_ARG;
	}
	head(&w, 0xa0, 5);
	head(&w, 0, 0), head(&w, 0, 8); /* kind: payword */
	head(&w, 0, 1), text(&w, device);
	head(&w, 0, 2), bytes(&w, chain, 8);
	head(&w, 0, 3), head(&w, 0, index);
	head(&w, 0, 4), bytes(&w, word, 32);
	if (w.err) {
		return FARTHING_ERR_BUFFER;
	}
	*len = w.n;
	return FARTHING_OK;
}

/* ---- Reading receipts ----------------------------------------------- */

typedef struct {
	const uint8_t *b;
	size_t n, off;
	int err;
} reader;

static void fail(reader *r, int reason) {
	if (r->err == 0) {
		r->err = reason;
	}
}

/* rhead reads a data item head: shortest form, definite, no simple
 * values. */
static uint64_t rhead(reader *r, uint8_t *major) {
	uint8_t ib, ai;
	size_t n = 0, i;
	uint64_t v = 0;
	*major = 0xff;
	if (r->err) {
		return 0;
	}
	if (r->off >= r->n) {
		fail(r, FARTHING_R_MALFORMED);
		return 0;
	}
	ib = r->b[r->off++];
	*major = ib & 0xe0, ai = ib & 0x1f;
	if (ai < 24) {
		return ai; /* a small simple value passes here, as in the Go reader: the caller refuses its type */
	} else if (ai <= 27) {
		n = (size_t)1 << (ai - 24);
		if (r->n - r->off < n) {
			fail(r, FARTHING_R_MALFORMED);
			return 0;
		}
		for (i = 0; i < n; i++) {
			v = v << 8 | r->b[r->off + i];
		}
		r->off += n;
		if ((n == 1 && v < 24) || (n == 2 && v <= 0xff) || (n == 4 && v <= 0xffff) || (n == 8 && v <= 0xffffffffu)) {
			fail(r, FARTHING_R_NON_CANONICAL);
			return 0;
		}
	} else {
		fail(r, ai == 31 ? FARTHING_R_NON_CANONICAL : FARTHING_R_MALFORMED);
		return 0;
	}
	if (*major == 0xe0) {
		fail(r, FARTHING_R_MALFORMED);
		return 0;
	}
	return v;
}

static uint64_t expect(reader *r, uint8_t major) {
	uint8_t m;
	uint64_t v = rhead(r, &m);
	if (r->err == 0 && m != major) {
		fail(r, FARTHING_R_MALFORMED);
		return 0;
	}
	return v;
}

/* span reads a byte or text string of at most max bytes, in place. */
static const uint8_t *span(reader *r, uint8_t major, size_t max, size_t *len) {
	uint64_t n = expect(r, major);
	const uint8_t *p;
	*len = 0;
	if (r->err) {
		return NULL;
	}
	if (n > max) {
		fail(r, FARTHING_R_STRING_TOO_LONG);
		return NULL;
	}
	if (r->n - r->off < n) {
		fail(r, FARTHING_R_MALFORMED);
		return NULL;
	}
	p = r->b + r->off;
	r->off += (size_t)n, *len = (size_t)n;
	return p;
}

/* name reads an identifier of at most max bytes into dst (max+1 bytes). */
static void name(reader *r, size_t max, char *dst) {
	size_t n, i;
	const uint8_t *p = span(r, 0x60, max, &n);
	if (r->err) {
		return;
	}
	if (n == 0) {
		fail(r, FARTHING_R_MISSING_FIELD);
		return;
	}
	for (i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
			fail(r, FARTHING_R_BAD_NAME);
			return;
		}
	}
	memcpy(dst, p, n);
	dst[n] = 0;
}

/* read_int reads a 64-bit signed integer. */
static int64_t read_int(reader *r) {
	uint8_t m;
	uint64_t v = rhead(r, &m);
	if (r->err) {
		return 0;
	}
	if ((m != 0 && m != 0x20) || v > FARTHING_MAX_SEQ) {
		fail(r, FARTHING_R_FIELD_RANGE);
		return 0;
	}
	return m == 0x20 ? -(int64_t)v - 1 : (int64_t)v;
}

/* envelope is a parsed COSE_Mac0. */
typedef struct {
	const uint8_t *prot, *payload, *tag;
	size_t prot_n, payload_n, tag_n;
} envelope;

/* parse_envelope reads a tagged COSE_Mac0 with exactly {1: 5, 4: kid}
 * protected and nothing unprotected (a receipt signed by the gateway's
 * Ed25519 key is not for this client). */
static int parse_envelope(reader *r, envelope *e) {
	uint8_t m;
	uint64_t tag = rhead(r, &m);
	reader p;
	size_t kid_n;
	int64_t alg;
	if (r->err) {
		return r->err;
	}
	if (m != 0xc0 || (tag != 17 && tag != 18)) {
		return FARTHING_R_UNEXPECTED_TAG;
	}
	if (expect(r, 0x80) != 4 && r->err == 0) {
		return FARTHING_R_MALFORMED;
	}
	e->prot = span(r, 0x40, 64, &e->prot_n);
	if (r->err) {
		return r->err;
	}
	p.b = e->prot;
	p.n = e->prot_n;
	p.off = 0;
	p.err = 0;
	if ((expect(&p, 0xa0) != 2 || expect(&p, 0) != 1) && p.err == 0) {
		return FARTHING_R_BAD_HEADER;
	}
	alg = read_int(&p);
	if (expect(&p, 0) != 4 && p.err == 0) {
		return FARTHING_R_BAD_HEADER;
	}
	span(&p, 0x40, 16, &kid_n);
	if (p.err == 0 && p.off != p.n) {
		fail(&p, FARTHING_R_MALFORMED);
	}
	if (p.err) {
		return p.err;
	}
	if (kid_n == 0) {
		return FARTHING_R_BAD_HEADER;
	}
	if (alg != FARTHING_ALG_HMAC256 || tag != 17) {
		return FARTHING_R_UNSUPPORTED_ALG; /* HMAC 256/256 in a COSE_Mac0: the only receipt this client takes */
	}
	if (expect(r, 0xa0) != 0 && r->err == 0) {
		return FARTHING_R_BAD_HEADER;
	}
	e->payload = span(r, 0x40, FARTHING_MAX_TICKET, &e->payload_n);
	e->tag = span(r, 0x40, 64, &e->tag_n);
	if (r->err == 0 && r->off != r->n) {
		fail(r, FARTHING_R_MALFORMED);
	}
	if (r->err) {
		return r->err;
	}
	return e->tag_n == 32 ? FARTHING_OK : FARTHING_R_BAD_SIGNATURE;
}

static int reason_valid(uint64_t v) {
	return (v >= 1 && v <= 13) || (v >= 32 && v <= 38) || (v >= 64 && v <= 101); /* protocol.Reason.Valid */
}

static void receipt_uint(reader *p, uint64_t k, farthing_receipt *x);

/* receipt_field reads field k of a receipt's payload into x: its strings
 * and bytes here, its numbers in receipt_uint. */
static void receipt_field(reader *p, uint64_t k, farthing_receipt *x) {
	size_t n;
	switch (k) {
	case 0:
		if (expect(p, 0) != 2 && p->err == 0) {
			fail(p, FARTHING_R_WRONG_KIND);
		}
		return;
	case 1:
		name(p, FARTHING_MAX_ID, x->device);
		return;
	case 7:
		name(p, FARTHING_MAX_CURRENCY, x->currency);
		return;
	case 9:
		name(p, FARTHING_MAX_ID, x->voucher);
		return;
	case 6:
		x->balance = read_int(p), x->has_balance = 1;
		return;
	case 12: {
		const uint8_t *q = span(p, 0x40, 8, &n);
		if (p->err == 0 && n != 8) {
			fail(p, FARTHING_R_FIELD_RANGE);
		}
		if (p->err == 0) {
			static const uint8_t zero[8];
			memcpy(x->nonce, q, 8);
			if (memcmp(q, zero, 8) == 0) {
				fail(p, FARTHING_R_NON_CANONICAL);
			}
		}
		return;
	}
	}
	receipt_uint(p, k, x);
}

/* receipt_uint reads field k of a receipt, a number, into x. */
static void receipt_uint(reader *p, uint64_t k, farthing_receipt *x) {
	uint64_t v = expect(p, 0);
	if (p->err) {
		return;
	}
	switch (k) {
	case 2:
		x->seq = v;
		break;
	case 3:
		if (v > 255) {
			fail(p, FARTHING_R_FIELD_RANGE);
		}
		x->status = (int)(v & 0x1ff);
		break;
	case 4:
		if (v == 0 || v > 0xffff) {
			fail(p, FARTHING_R_NON_CANONICAL);
		}
		x->reason = (int)v;
		break;
	case 5:
		x->charged = v;
		break;
	case 8:
		if (v == 0 || v > 0xffffffffu) {
			fail(p, FARTHING_R_FIELD_RANGE);
		}
		x->retry_after = (uint32_t)v;
		break;
	case 10:
		if (v != 1) {
			fail(p, FARTHING_R_NON_CANONICAL);
		}
		x->low_balance = 1;
		break;
	case 11:
		if (v == 0) {
			fail(p, FARTHING_R_NON_CANONICAL);
		}
		x->time_ms = v;
		break;
	default:
		fail(p, FARTHING_R_UNKNOWN_FIELD);
	}
}

/* receipt_valid holds a parsed receipt to the rules of the wire format
 * (protocol.Receipt.Validate). */
static int receipt_valid(const farthing_receipt *x) {
	static const uint8_t zero[8];
	int time_answer = memcmp(x->nonce, zero, 8) != 0;
	if (x->seq > FARTHING_MAX_SEQ) {
		return FARTHING_R_FIELD_RANGE;
	}
	if (x->voucher[0] != 0) {
		if (x->seq != 0) {
			return FARTHING_R_FIELD_RANGE;
		}
	} else if (time_answer) {
		if (x->seq != 0 || x->status != FARTHING_ACCEPTED || x->time_ms == 0) {
			return FARTHING_R_FIELD_RANGE;
		}
	} else if (x->seq == 0 && x->status != FARTHING_REJECTED && x->status != FARTHING_RETRY_LATER) {
		return FARTHING_R_FIELD_RANGE;
	}
	if (x->status < 0 || x->status > FARTHING_HELD || (x->reason != 0 && !reason_valid((uint64_t)x->reason))) {
		return FARTHING_R_FIELD_RANGE;
	}
	switch (x->status) {
	case FARTHING_ACCEPTED:
		return x->reason != 0 ? FARTHING_R_FIELD_RANGE : FARTHING_OK;
	case FARTHING_DUPLICATE:
		return x->reason != 0 && x->reason != 71 ? FARTHING_R_FIELD_RANGE : FARTHING_OK;
	case FARTHING_INSUFFICIENT_FUNDS:
		return x->reason != 0 && x->reason != 72 ? FARTHING_R_FIELD_RANGE : FARTHING_OK;
	}
	return x->reason == 0 ? FARTHING_R_MISSING_FIELD : FARTHING_OK;
}

static int verify_mac(const envelope *e, const uint8_t key[FARTHING_KEY_SIZE]) {
	uint8_t pre[ROOM], sum[32], diff = 0;
	writer w = {pre, sizeof pre, 0, 0};
	farthing_hmac h;
	size_t i;
	head(&w, 0x80, 4);
	text(&w, "MAC0");
	bytes(&w, e->prot, e->prot_n);
	head(&w, 0x40, 0);
	head(&w, 0x40, e->payload_n);
	farthing_hmac_init(&h, key, FARTHING_KEY_SIZE);
	farthing_hmac_update(&h, pre, w.n);
	farthing_hmac_update(&h, e->payload, e->payload_n);
	farthing_hmac_final(&h, sum);
	for (i = 0; i < 32; i++) {
		diff |= (uint8_t)(sum[i] ^ e->tag[i]); /* in constant time */
	}
	return diff == 0 ? FARTHING_OK : FARTHING_R_BAD_SIGNATURE;
}

int farthing_receipt_parse(const uint8_t *b, size_t len, const uint8_t receipt_key[FARTHING_KEY_SIZE], farthing_receipt *x) {
	reader r = {b, len, 0, 0}, p;
	envelope e;
	uint64_t n, k, last = 0, seen = 0;
	int err;
	memset(x, 0, sizeof *x);
	if (len > FARTHING_MAX_RECEIPT) {
		return FARTHING_R_TOO_LARGE;
	}
	if ((err = parse_envelope(&r, &e)) != FARTHING_OK) {
		return err;
	}
	p.b = e.payload;
	p.n = e.payload_n;
	p.off = 0;
	p.err = 0;
	n = expect(&p, 0xa0);
	if (p.err == 0 && n > 16) {
		fail(&p, FARTHING_R_MALFORMED);
	}
	for (; n > 0 && p.err == 0; n--) {
		k = expect(&p, 0);
		if (p.err == 0 && (k > 0x80000000u || (seen != 0 && k <= last))) {
			fail(&p, FARTHING_R_NON_CANONICAL); /* keys ascending, so none twice */
		} else if (p.err == 0 && k > 12) {
			fail(&p, FARTHING_R_UNKNOWN_FIELD); /* 13, a grant, too: this client asks for none */
		}
		if (p.err) {
			break;
		}
		receipt_field(&p, k, x);
		seen |= (uint64_t)1 << k, last = k;
	}
	if (p.err == 0 && p.off != p.n) {
		fail(&p, FARTHING_R_MALFORMED);
	}
	if (p.err) {
		return p.err;
	}
	if ((seen & 0x2f) != 0x2f) { /* kind, device, seq, status, charged */
		return FARTHING_R_MISSING_FIELD;
	}
	if ((err = receipt_valid(x)) != FARTHING_OK) {
		return err;
	}
	return verify_mac(&e, receipt_key);
}

int farthing_receipt_final(const farthing_receipt *r) { return r->status != FARTHING_RETRY_LATER; }
