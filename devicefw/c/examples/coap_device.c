/*
 * coap_device.c: a metering device in C over CoAP and DTLS with a
 * pre-shared key (libcoap).
 *
 *   coap_device HOST PORT DEVICE MASTER_HEX SEQ_FILE METER START STEP COUNT
 *
 * It opens a DTLS session to the gateway (PSK identity: its device id; the
 * key is derived from its master secret), POSTs COUNT tickets to
 * coaps://HOST:PORT/t (Content-Format 17, COSE_Mac0), the meter's
 * register going from START up by STEP each time, and checks each
 * response: the receipt, MAC'd with its receipt key. A ticket is sent
 * again until a final receipt answers it. It prints one line per ticket
 * and exits 0 when every ticket was accepted.
 */
#include "device.h"

#include <arpa/inet.h>
#include <coap3/coap.h>

static farthing_receipt last;
static int have;
static example dev;

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent, const coap_pdu_t *received, const coap_mid_t mid) {
	const uint8_t *data;
	size_t len;
	int err;
	(void)s, (void)sent, (void)mid;
	if (!coap_get_data(received, &len, &data)) {
		fprintf(stderr, "a response without a receipt (code %d)\n", (int)coap_pdu_get_code(received));
		return COAP_RESPONSE_OK;
	}
	err = farthing_receipt_parse(data, len, dev.keys.receipt, &last);
	if (err != FARTHING_OK) {
		fprintf(stderr, "receipt refused: reason %d\n", err);
		return COAP_RESPONSE_OK;
	}
	have = 1;
	return COAP_RESPONSE_OK;
}

/* post sends one ticket and waits up to 10 s for its receipt. */
static int post(coap_context_t *ctx, coap_session_t *session, const uint8_t *ticket, size_t len) {
	uint8_t cf[4];
	int waited;
	coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST, session);
	if (pdu == NULL) {
		return -1;
	}
	coap_add_option(pdu, COAP_OPTION_URI_PATH, 1, (const uint8_t *)"t");
	coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT, coap_encode_var_safe(cf, sizeof cf, 17), cf);
	coap_add_data(pdu, len, ticket);
	have = 0;
	if (coap_send(session, pdu) == COAP_INVALID_MID) {
		return -1;
	}
	for (waited = 0; !have && waited < 10000; waited += 100) {
		coap_io_process(ctx, 100);
	}
	return have ? 0 : -1;
}

/* open_session opens the DTLS session to the gateway with the device's
 * PSK (identity: its id); NULL if it cannot. */
static coap_session_t *open_session(coap_context_t *ctx) {
	coap_address_t dst;
	coap_dtls_cpsk_t psk;
	coap_address_init(&dst);
	dst.addr.sin.sin_family = AF_INET;
	dst.addr.sin.sin_port = htons((uint16_t)atoi(dev.port));
	dst.size = sizeof dst.addr.sin;
	if (inet_pton(AF_INET, dev.host, &dst.addr.sin.sin_addr) != 1) {
		fprintf(stderr, "HOST is an IPv4 address\n");
		return NULL;
	}
	memset(&psk, 0, sizeof psk);
	psk.version = COAP_DTLS_CPSK_SETUP_VERSION;
	psk.psk_info.identity.s = (const uint8_t *)dev.id;
	psk.psk_info.identity.length = strlen(dev.id);
	psk.psk_info.key.s = (const uint8_t *)dev.keys.dtls_psk;
	psk.psk_info.key.length = strlen(dev.keys.dtls_psk);
	return coap_new_client_session_psk2(ctx, NULL, &dst, COAP_PROTO_DTLS, &psk);
}

int main(int argc, char **argv) {
	static uint8_t buf[FARTHING_MAX_TICKET];
	coap_context_t *ctx;
	coap_session_t *session;
	int i, failed = 0;
	if (example_init(&dev, argc, argv) != 0) {
		return 2;
	}
	coap_startup();
	ctx = coap_new_context(NULL);
	session = ctx == NULL ? NULL : open_session(ctx);
	if (session == NULL) {
		fprintf(stderr, "cannot open a DTLS session to %s:%s\n", dev.host, dev.port);
		return 1;
	}
	coap_register_response_handler(ctx, on_response);
	for (i = 0; i < dev.count; i++) {
		size_t len;
		uint64_t seq;
		int tries;
		if (example_next(&dev, buf, sizeof buf, &len, &seq) != 0) {
			return 1;
		}
		for (tries = 0; tries < 5; tries++) {
			if (post(ctx, session, buf, len) == 0 && last.seq == seq && farthing_receipt_final(&last)) {
				break;
			}
		}
		if (!have || last.seq != seq) {
			fprintf(stderr, "no receipt for seq %llu\n", (unsigned long long)seq);
			return 1;
		}
		failed |= example_report(&dev, seq, &last);
	}
	coap_session_release(session);
	coap_free_context(ctx);
	coap_cleanup();
	return failed;
}
