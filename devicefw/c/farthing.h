/*
 * farthing.h: the Farthing device client in C99.
 *
 * Builds a device's usage tickets (COSE_Mac0 with HMAC 256/256, or
 * COSE_Sign1 with Ed25519 through a signing function the caller gives),
 * payword tickets, and checks the gateway's receipts. One header and one
 * source file, no malloc, no dependency beyond the C library's string
 * functions: its own SHA-256, HMAC and HKDF. Every encoder writes into
 * the caller's buffer and returns the length; nothing is static but
 * constant tables.
 *
 * The bytes are exactly those of the Go client (package protocol): the
 * CDDL of every message is in protocol/doc.go, test vectors in
 * protocol/testdata/vectors.json. Tickets carry cumulative registers, not
 * deltas: a lost or repeated ticket corrects itself.
 *
 * The sequence counter never repeats across power losses: it reserves
 * FARTHING_SEQ_RESERVE seqs at a time through a flash hook the caller
 * gives (farthing_seq_init), so flash is written once per reservation.
 */
#ifndef FARTHING_H
#define FARTHING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits, as the wire format has them (protocol/limits.go). */
#define FARTHING_MAX_TICKET 1280  /* an encoded ticket, envelope included */
#define FARTHING_MAX_RECEIPT 384  /* an encoded receipt */
#define FARTHING_MAX_READINGS 16  /* readings per ticket (at least one) */
#define FARTHING_MAX_ID 64        /* device, account, session ids: [A-Za-z0-9._-] */
#define FARTHING_MAX_METER 32     /* meter names */
#define FARTHING_MAX_CURRENCY 8   /* currency codes */
#define FARTHING_MAX_SEQ 0x7fffffffffffffffULL
#define FARTHING_KEY_SIZE 32      /* master secret, HMAC keys */
#define FARTHING_KID_SIZE 8       /* key ids */
#define FARTHING_SEQ_RESERVE 100  /* seqs one flash write reserves */

/* COSE algorithms (IANA). */
#define FARTHING_ALG_HMAC256 5
#define FARTHING_ALG_EDDSA (-8)

/* Errors: negative values are this client's own; positive ones are the
 * wire format's reason codes (protocol/status.go) for a message refused. */
#define FARTHING_OK 0
#define FARTHING_ERR_BUFFER (-1)   /* the caller's buffer is too small */
#define FARTHING_ERR_ARG (-2)      /* an argument out of range: an id's alphabet, no readings */
#define FARTHING_ERR_SEQ (-3)      /* the flash hook failed, or seqs are exhausted: no seq issued */
#define FARTHING_ERR_SIGN (-4)     /* the signing function failed */
#define FARTHING_R_MALFORMED 1
#define FARTHING_R_TOO_LARGE 2
#define FARTHING_R_NON_CANONICAL 3
#define FARTHING_R_UNEXPECTED_TAG 4
#define FARTHING_R_UNKNOWN_FIELD 5
#define FARTHING_R_MISSING_FIELD 6
#define FARTHING_R_FIELD_RANGE 7
#define FARTHING_R_STRING_TOO_LONG 8
#define FARTHING_R_BAD_NAME 9
#define FARTHING_R_WRONG_KIND 12
#define FARTHING_R_BAD_HEADER 13
#define FARTHING_R_UNSUPPORTED_ALG 32
#define FARTHING_R_BAD_SIGNATURE 34

/* Receipt statuses. */
#define FARTHING_ACCEPTED 0
#define FARTHING_DUPLICATE 1
#define FARTHING_REJECTED 2
#define FARTHING_INSUFFICIENT_FUNDS 3
#define FARTHING_RETRY_LATER 4
#define FARTHING_HELD 5

/* SHA-256 (FIPS 180-4). A platform with a hardware hash can replace
 * farthing.c's three functions by defining FARTHING_EXTERNAL_SHA256 and
 * providing them. */
typedef struct {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t n;
} farthing_sha256;
void farthing_sha256_init(farthing_sha256 *s);
void farthing_sha256_update(farthing_sha256 *s, const uint8_t *p, size_t n);
void farthing_sha256_final(farthing_sha256 *s, uint8_t out[32]);

/* HMAC-SHA256 (RFC 2104) with a key of at most 64 bytes. */
typedef struct {
	farthing_sha256 inner;
	uint8_t okey[64];
} farthing_hmac;
void farthing_hmac_init(farthing_hmac *h, const uint8_t *key, size_t keylen);
void farthing_hmac_update(farthing_hmac *h, const uint8_t *p, size_t n);
void farthing_hmac_final(farthing_hmac *h, uint8_t out[32]);

/* Key purposes: a device's keys are derived from its one master secret
 * with HKDF-SHA256, no salt, info = the purpose (protocol/keys.go). */
#define FARTHING_PURPOSE_TICKET "farthing v1 ticket mac"
#define FARTHING_PURPOSE_RECEIPT "farthing v1 receipt mac"
#define FARTHING_PURPOSE_DTLS_PSK "farthing v1 dtls psk"
#define FARTHING_PURPOSE_MQTT_PASSWORD "farthing v1 mqtt password" /* used hex-encoded */
void farthing_derive_key(const uint8_t master[FARTHING_KEY_SIZE], const char *purpose, uint8_t out[FARTHING_KEY_SIZE]);

/* The key id of a key: SHA-256("farthing kid v1" || alg as CBOR || key),
 * first 8 bytes. */
void farthing_key_id(int alg, const uint8_t *key, size_t keylen, uint8_t kid[FARTHING_KID_SIZE]);

/* The flash hook: store next durably (it must not return before the value
 * would survive a power loss); 0 on success. */
typedef int (*farthing_seq_save_fn)(void *ctx, uint64_t next);

/* A sequence counter. Invariant: every seq issued is below limit, and
 * limit was saved before it was issued; after a reboot, counting resumes
 * at the saved value (the unused rest of a reservation is skipped). */
typedef struct {
	uint64_t next, limit;
	farthing_seq_save_fn save;
	void *ctx;
} farthing_seq;
/* saved is what the hook stored last (0 if never). */
void farthing_seq_init(farthing_seq *q, uint64_t saved, farthing_seq_save_fn save, void *ctx);
int farthing_seq_take(farthing_seq *q, uint64_t *seq);

/* Ed25519 signing, which this client does not implement: the caller's
 * function (Monocypher's crypto_eddsa_sign, libsodium's
 * crypto_sign_detached, a secure element) signs msg into sig; 0 on
 * success. */
typedef int (*farthing_sign_fn)(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[64]);

/* What makes a ticket's MAC or signature. */
typedef struct {
	int alg; /* FARTHING_ALG_HMAC256 or FARTHING_ALG_EDDSA */
	uint8_t kid[FARTHING_KID_SIZE];
	uint8_t key[FARTHING_KEY_SIZE]; /* HMAC: the ticket key */
	farthing_sign_fn sign;          /* EdDSA */
	void *sign_ctx;
} farthing_signer;
/* An HMAC signer with the device's ticket key. */
void farthing_signer_hmac(farthing_signer *s, const uint8_t ticket_key[FARTHING_KEY_SIZE]);
/* An Ed25519 signer: the public key names it (its kid); sign signs. The
 * message sign gets is the COSE Sig_structure, at most
 * FARTHING_MAX_TICKET + 32 bytes. */
void farthing_signer_ed25519(farthing_signer *s, const uint8_t public_key[32], farthing_sign_fn sign, void *ctx);

/* One reading: a meter's cumulative register in its base unit. */
typedef struct {
	const char *meter;
	uint64_t reg;
} farthing_reading;

/* A ticket. Optional fields: epoch 0, account and session NULL, grant 0. */
typedef struct {
	const char *device;
	uint64_t seq;     /* 1..2^63-1, from farthing_seq_take */
	uint64_t time_ms; /* device time, Unix ms, > 0 */
	uint64_t epoch;   /* register epoch: raise it when the registers restart from zero */
	const farthing_reading *readings;
	size_t n_readings; /* 1..16, meter names distinct */
	const char *account;
	const char *session;
	uint64_t grant;
} farthing_ticket;

/* Encodes and MACs or signs t into buf (cap bytes); the length is in *len.
 * Returns FARTHING_OK, or an error (nothing in *len). */
int farthing_ticket_encode(const farthing_ticket *t, const farthing_signer *s, uint8_t *buf, size_t cap, size_t *len);

/* Payword tickets (protocol/payword.go): a bare CBOR map; the payword is
 * its own proof. farthing_payword_step is H(w) = SHA-256("FPW1" || chain
 * || w): a device walks its seed down to the index it reveals. */
void farthing_payword_step(const uint8_t chain[8], const uint8_t w[32], uint8_t out[32]);
int farthing_payword_encode(const char *device, const uint8_t chain[8], uint32_t index, const uint8_t word[32],
	uint8_t *buf, size_t cap, size_t *len);

/* A receipt, as farthing_receipt_parse reads it. */
typedef struct {
	char device[FARTHING_MAX_ID + 1];
	uint64_t seq;
	int status;
	int reason;           /* 0: none */
	uint64_t charged;     /* nanos */
	int64_t balance;      /* nanos, if has_balance */
	int has_balance;
	char currency[FARTHING_MAX_CURRENCY + 1]; /* "" if none */
	uint32_t retry_after; /* ms, 0: none */
	char voucher[FARTHING_MAX_ID + 1];        /* "" unless it answers a voucher */
	int low_balance;
	uint64_t time_ms;     /* the gateway's clock, 0: none */
	uint8_t nonce[8];     /* a time request's, all zero: none */
} farthing_receipt;

/* Parses a receipt and checks its MAC with the device's receipt key.
 * Anything not in the one encoding the gateway writes is refused, with
 * the reason code; a receipt carrying a grant (key 13) is refused as an
 * unknown field (this client does not ask for grants). */
int farthing_receipt_parse(const uint8_t *b, size_t len, const uint8_t receipt_key[FARTHING_KEY_SIZE], farthing_receipt *r);

/* A receipt's status is final (anything but retry later): the ticket it
 * answers may be forgotten. */
int farthing_receipt_final(const farthing_receipt *r);

#ifdef __cplusplus
}
#endif
#endif
