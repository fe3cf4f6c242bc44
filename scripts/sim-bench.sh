#!/usr/bin/env bash
# Measures the gateway end to end with `farthing sim`, in one run: the
# embedded broker and a real Mosquitto in front of it, HMAC and Ed25519
# devices. Needs mosquitto (scripts/apt-install.sh mosquitto).
#   DEVICES=50 RATE=20000 DURATION=10s INFLIGHT=4 scripts/sim-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
DEVICES=${DEVICES:-50} RATE=${RATE:-20000} DURATION=${DURATION:-10s} INFLIGHT=${INFLIGHT:-4}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/farthingd" ./cmd/farthingd
go build -o "$work/farthing" ./cmd/farthing
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

data=$work/data
mkdir -p "$data"
cat > "$data/tariffs.yaml" <<'T'
tariffs:
  - {id: energy, currency: EUR, unit: Wh, period: month, timezone: Europe/Berlin,
     tiers: [{up_to: 100000, price: 0.39 EUR, per: 1000}, {price: 0.34 EUR, per: 1000}],
     time_of_use: [{name: peak, days: weekdays, from: "17:00", to: "21:00", price: 0.49 EUR, per: 1000}]}
T
accounts='accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "100000000"}
providers:
  - {id: utility, window: 1m, threshold: "100 EUR"}'
printf '%s\n' "$accounts" > "$work/terms.yaml"
for t in hmac ed25519; do
  "$work/farthing" device add --data "$data" --config "$work/terms.yaml" --count "$DEVICES" --prefix "$t-" --type "$t" \
    --account fleet --provider utility --tariff energy_wh=energy >/dev/null 2>&1
done

run() { # mode broker-url
  for t in hmac ed25519; do
    echo "== $1, $t: $DEVICES devices, $RATE tickets/s offered, $DURATION, $INFLIGHT in flight per device"
    "$work/farthing" sim --data "$data" --broker "$2" --type "$t" --rate "$RATE" --duration "$DURATION" --inflight "$INFLIGHT" 2>/dev/null
  done
}

mq=$(port)
printf '%s\nmqtt: {listen: "127.0.0.1:%s"}\nhttp: {listen: "off"}\ndtls: {listen: "off"}\n' "$accounts" "$mq" > "$work/embedded.yaml"
"$work/farthingd" --config "$work/embedded.yaml" --data "$data" 2>"$work/embedded.log" &
gw=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$mq) 2>/dev/null && break; sleep 0.1; done
run "embedded broker" "tcp://127.0.0.1:$mq"
kill -TERM $gw; wait $gw || true

mp=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nset_tcp_nodelay true\n' "$mp" > "$work/mosquitto.conf"
[ "$(id -u)" = 0 ] && sed -i '1i user root' "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$mp) 2>/dev/null && break; sleep 0.1; done
printf '%s\nmqtt: {mode: external, broker: "tcp://127.0.0.1:%s"}\nhttp: {listen: "off"}\ndtls: {listen: "off"}\n' "$accounts" "$mp" > "$work/external.yaml"
"$work/farthingd" --config "$work/external.yaml" --data "$data" 2>"$work/external.log" &
gw=$!
sleep 1
run "Mosquitto (external mode)" "tcp://127.0.0.1:$mp"
kill -TERM $gw; wait $gw || true
