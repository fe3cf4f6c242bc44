/*
 * device.h: what the two example devices share: their keys from the
 * master secret, the sequence counter kept in a file (the flash hook),
 * and a meter that counts. Not part of the client: an example of using it.
 */
#ifndef FARTHING_EXAMPLE_DEVICE_H
#define FARTHING_EXAMPLE_DEVICE_H

#include "../farthing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* device_keys are a device's keys, each derived from its one master
 * secret (farthing device add writes it, hex, in DATA/device-keys/ID.secret
 * and the registry). */
typedef struct {
	farthing_signer ticket;
	uint8_t receipt[FARTHING_KEY_SIZE];
	char mqtt_password[2 * FARTHING_KEY_SIZE + 1]; /* hex */
	char dtls_psk[33];                             /* the first 32 hex digits of its key */
} device_keys;

static int unhex32(const char *s, uint8_t out[32]) {
	int i;
	if (strlen(s) != 64) {
		return -1;
	}
	for (i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1) {
			return -1;
		}
		out[i] = (uint8_t)v;
	}
	return 0;
}

static void tohex(const uint8_t *p, size_t n, char *out) {
	static const char d[] = "0123456789abcdef";
	size_t i;
	for (i = 0; i < n; i++) {
		out[2 * i] = d[p[i] >> 4], out[2 * i + 1] = d[p[i] & 15];
	}
	out[2 * n] = 0;
}

static int device_keys_init(device_keys *k, const char *master_hex) {
	uint8_t master[32], key[32];
	char h[65];
	if (unhex32(master_hex, master) != 0) {
		return -1;
	}
	farthing_derive_key(master, FARTHING_PURPOSE_TICKET, key);
	farthing_signer_hmac(&k->ticket, key);
	farthing_derive_key(master, FARTHING_PURPOSE_RECEIPT, k->receipt);
	farthing_derive_key(master, FARTHING_PURPOSE_MQTT_PASSWORD, key);
	tohex(key, 32, k->mqtt_password);
	farthing_derive_key(master, FARTHING_PURPOSE_DTLS_PSK, key);
	tohex(key, 32, h);
	memcpy(k->dtls_psk, h, 32);
	k->dtls_psk[32] = 0;
	memset(master, 0, sizeof master);
	return 0;
}

/* The flash hook: the reservation in a file, written and synced before
 * the seqs it covers are used. */
static int save_seq(void *path, uint64_t next) {
	FILE *f = fopen((const char *)path, "w");
	int err;
	if (f == NULL) {
		return -1;
	}
	err = fprintf(f, "%llu\n", (unsigned long long)next) < 0;
	err |= fflush(f) != 0 || fsync(fileno(f)) != 0;
	err |= fclose(f) != 0;
	return err ? -1 : 0;
}

static uint64_t load_seq(const char *path) {
	unsigned long long v = 0;
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		if (fscanf(f, "%llu", &v) != 1) {
			v = 0;
		}
		fclose(f);
	}
	return v;
}

static uint64_t now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* example is what both example devices take from their command line,
 *   HOST PORT DEVICE MASTER_HEX SEQ_FILE METER START STEP COUNT,
 * and the state they keep: keys, the seq counter, the meter. */
typedef struct {
	const char *host, *port, *id;
	device_keys keys;
	farthing_seq seq;
	farthing_reading reading;
	uint64_t step;
	int count;
} example;

static int example_init(example *d, int argc, char **argv) {
	if (argc != 10 || device_keys_init(&d->keys, argv[4]) != 0) {
		fprintf(stderr, "usage: %s HOST PORT DEVICE MASTER_HEX SEQ_FILE METER START STEP COUNT\n", argv[0]);
		return -1;
	}
	d->host = argv[1];
	d->port = argv[2];
	d->id = argv[3];
	farthing_seq_init(&d->seq, load_seq(argv[5]), save_seq, argv[5]);
	d->reading.meter = argv[6];
	d->reading.reg = strtoull(argv[7], NULL, 10);
	d->step = strtoull(argv[8], NULL, 10);
	d->count = atoi(argv[9]);
	return 0;
}

/* example_next meters STEP more and makes the ticket of the new
 * register into buf; its seq goes to *seq. */
static int example_next(example *d, uint8_t *buf, size_t cap, size_t *len, uint64_t *seq) {
	farthing_ticket t;
	memset(&t, 0, sizeof t);
	d->reading.reg += d->step;
	t.device = d->id, t.time_ms = now_ms(), t.readings = &d->reading, t.n_readings = 1;
	if (farthing_seq_take(&d->seq, &t.seq) != FARTHING_OK || farthing_ticket_encode(&t, &d->keys.ticket, buf, cap, len) != FARTHING_OK) {
		fprintf(stderr, "cannot make a ticket\n");
		return -1;
	}
	*seq = t.seq;
	return 0;
}

/* example_report prints the line of a ticket's receipt; 0 if accepted. */
static int example_report(const example *d, uint64_t seq, const farthing_receipt *r) {
	printf("ticket %llu register %llu status %d reason %d charged %llu balance %lld\n", (unsigned long long)seq,
		(unsigned long long)d->reading.reg, r->status, r->reason, (unsigned long long)r->charged, (long long)r->balance);
	return r->status != FARTHING_ACCEPTED;
}

#endif
