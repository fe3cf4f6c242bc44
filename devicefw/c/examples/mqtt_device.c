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
static example dev;

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg) {
	farthing_receipt r;
	int err;
	(void)m, (void)obj;
	err = farthing_receipt_parse(msg->payload, (size_t)msg->payloadlen, dev.keys.receipt, &r);
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
	struct mosquitto *m;
	int i, failed = 0;
	if (example_init(&dev, argc, argv) != 0) {
		return 2;
	}
	snprintf(ticket_topic, sizeof ticket_topic, "farthing/v1/%s/ticket", dev.id);
	snprintf(receipt_topic, sizeof receipt_topic, "farthing/v1/%s/receipt", dev.id);

	mosquitto_lib_init();
	m = mosquitto_new(dev.id, true, NULL);
	mosquitto_username_pw_set(m, dev.id, dev.keys.mqtt_password);
	mosquitto_message_callback_set(m, on_message);
	mosquitto_subscribe_callback_set(m, on_subscribe);
	if (mosquitto_connect(m, dev.host, atoi(dev.port), 30) != MOSQ_ERR_SUCCESS ||
		mosquitto_subscribe(m, NULL, receipt_topic, 1) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "cannot connect to %s:%s\n", dev.host, dev.port);
		return 1;
	}
	while (!subscribed && mosquitto_loop(m, 100, 1) == MOSQ_ERR_SUCCESS) {
	}
	for (i = 0; i < dev.count; i++) {
		size_t len;
		uint64_t seq;
		int tries;
		if (example_next(&dev, buf, sizeof buf, &len, &seq) != 0) {
			return 1;
		}
		for (tries = 0; tries < 5; tries++) {
			mosquitto_publish(m, NULL, ticket_topic, (int)len, buf, 1, false);
			if (answer(m, seq) == 0 && farthing_receipt_final(&last)) {
				break;
			}
		}
		if (!have || last.seq != seq) {
			fprintf(stderr, "no receipt for seq %llu\n", (unsigned long long)seq);
			return 1;
		}
		failed |= example_report(&dev, seq, &last);
	}
	mosquitto_disconnect(m);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return failed;
}
