/*
 * mqtt_device.c: a metering device in C over MQTT (libmosquitto).
 *
 *   mqtt_device HOST PORT DEVICE MASTER_HEX SEQ_FILE METER START STEP COUNT
 *
 * It connects as DEVICE (user name and client id; the password is derived
 * from its master secret), reads its receipts on farthing/v1/DEVICE/receipt,
 * and reports COUNT tickets on farthing/v1/DEVICE/ticket, the meter's
 * register going from START up by STEP each time. Each ticket is sent
 * again until a final receipt answers it; each receipt's MAC is checked.
 * It prints one line per ticket and exits 0 when every ticket was
 * accepted.
 */
#include "device.h"

#include <mosquitto.h>

static farthing_receipt last;  /* the last receipt verified */
static int have, subscribed;
static device_keys keys;

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg) {
	farthing_receipt r;
	int err;
	(void)m, (void)obj;
	err = farthing_receipt_parse(msg->payload, (size_t)msg->payloadlen, keys.receipt, &r);
	if (err != FARTHING_OK) {
		fprintf(stderr, "receipt refused: reason %d\n", err);
		return;
	}
	last = r, have = 1;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *qos) {
	(void)m, (void)obj, (void)mid, (void)n, (void)qos;
	subscribed = 1;
}

/* answer waits up to 10 s for the receipt of seq. */
static int answer(struct mosquitto *m, uint64_t seq) {
	int i;
	for (i = 0; i < 100; i++) {
		if (have && last.seq == seq) {
			return 0;
		}
		if (mosquitto_loop(m, 100, 1) != MOSQ_ERR_SUCCESS) {
			mosquitto_reconnect(m);
		}
	}
	return -1;
}

int main(int argc, char **argv) {
	static uint8_t buf[FARTHING_MAX_TICKET];
	char ticket_topic[128], receipt_topic[128];
	farthing_seq q;
	farthing_reading rd;
	farthing_ticket t;
	struct mosquitto *m;
	int i, count, failed = 0;
	uint64_t step;
	if (argc != 10 || device_keys_init(&keys, argv[4]) != 0) {
		fprintf(stderr, "usage: mqtt_device HOST PORT DEVICE MASTER_HEX SEQ_FILE METER START STEP COUNT\n");
		return 2;
	}
	farthing_seq_init(&q, load_seq(argv[5]), save_seq, argv[5]);
	rd.meter = argv[6];
	rd.reg = strtoull(argv[7], NULL, 10);
	step = strtoull(argv[8], NULL, 10);
	count = atoi(argv[9]);
	snprintf(ticket_topic, sizeof ticket_topic, "farthing/v1/%s/ticket", argv[3]);
	snprintf(receipt_topic, sizeof receipt_topic, "farthing/v1/%s/receipt", argv[3]);

	mosquitto_lib_init();
	m = mosquitto_new(argv[3], true, NULL);
	mosquitto_username_pw_set(m, argv[3], keys.mqtt_password);
	mosquitto_message_callback_set(m, on_message);
	mosquitto_subscribe_callback_set(m, on_subscribe);
	if (mosquitto_connect(m, argv[1], atoi(argv[2]), 30) != MOSQ_ERR_SUCCESS ||
		mosquitto_subscribe(m, NULL, receipt_topic, 1) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
		return 1;
	}
	while (!subscribed && mosquitto_loop(m, 100, 1) == MOSQ_ERR_SUCCESS) {
	}
	for (i = 0; i < count; i++) {
		size_t len;
		int tries;
		memset(&t, 0, sizeof t);
		rd.reg += step;
		t.device = argv[3], t.time_ms = now_ms(), t.readings = &rd, t.n_readings = 1;
		if (farthing_seq_take(&q, &t.seq) != FARTHING_OK || farthing_ticket_encode(&t, &keys.ticket, buf, sizeof buf, &len) != FARTHING_OK) {
			fprintf(stderr, "cannot make ticket %d\n", i);
			return 1;
		}
		for (tries = 0; tries < 5; tries++) {
			mosquitto_publish(m, NULL, ticket_topic, (int)len, buf, 1, false);
			if (answer(m, t.seq) == 0 && farthing_receipt_final(&last)) {
				break;
			}
		}
		if (!have || last.seq != t.seq) {
			fprintf(stderr, "no receipt for seq %llu\n", (unsigned long long)t.seq);
			return 1;
		}
		printf("ticket %llu register %llu status %d reason %d charged %llu balance %lld\n", (unsigned long long)t.seq,
			(unsigned long long)rd.reg, last.status, last.reason, (unsigned long long)last.charged, (long long)last.balance);
		failed |= last.status != FARTHING_ACCEPTED;
	}
	mosquitto_disconnect(m);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return failed;
}
