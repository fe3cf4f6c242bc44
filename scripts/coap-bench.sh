#!/usr/bin/env bash
# Measures CoAP over DTLS end to end, in one run: N devices each with its
# own DTLS session (PSK), the handshake rate while they connect, tickets/s
# and receipt latency over all the sessions, and the daemon's resident
# memory per idle session.
#   DEVICES=1000 RATE=3000 DURATION=10s scripts/coap-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
DEVICES=${DEVICES:-1000} RATE=${RATE:-3000} DURATION=${DURATION:-10s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/farthingd" ./cmd/farthingd
go build -o "$work/farthing" ./cmd/farthing
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if "'"$1"'"=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
data=$work/data
mkdir -p "$data"
printf 'tariffs:\n  - {id: energy, currency: EUR, unit: Wh, period: none, price: 0.30 EUR, per: 1000}\n' > "$data/tariffs.yaml"
up=$(port udp) mq=$(port tcp)
cat > "$work/farthingd.yaml" <<C
accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "100000000"}
providers:
  - {id: utility, window: 1m}
mqtt: {listen: "127.0.0.1:$mq"}
http: {listen: "off"}
dtls: {listen: "127.0.0.1:$up", handshake_rate: 100000, handshake_burst: 100000, max_sessions: 50000, max_half_open: 1024}
C
"$work/farthing" device add --data "$data" --config "$work/farthingd.yaml" --count "$DEVICES" --prefix cell- --type hmac --account fleet \
  --provider utility --tariff energy_wh=energy >/dev/null 2>&1
"$work/farthingd" --config "$work/farthingd.yaml" --data "$data" 2>"$work/d.log" &
gw=$!
sleep 1
rss() { awk '/VmRSS/ {print $2}' /proc/$gw/status; }
base=$(rss)
# Phase 1: every device opens its session, sends one ticket, then sits idle.
"$work/farthing" sim --data "$data" --transport coaps --coap "127.0.0.1:$up" --rate "$DEVICES" --duration 1s \
  --inflight 1 --hold 8s 2>"$work/idle.err" > "$work/idle.out" &
sim=$!
while ! grep -q "holding" "$work/idle.err" 2>/dev/null; do sleep 0.2; kill -0 $sim 2>/dev/null || break; done
sleep 4
held=$(rss)
wait $sim
grep -E "handshakes/s" "$work/idle.out" || true
echo "daemon resident memory: $base kB before, $held kB with $DEVICES idle DTLS sessions open:" \
  "$(( (held - base) * 1024 / DEVICES )) bytes per idle session"
# Phase 2: the load, over new sessions.
"$work/farthing" sim --data "$data" --transport coaps --coap "127.0.0.1:$up" --rate "$RATE" --duration "$DURATION" \
  --inflight 1 2>/dev/null
kill -TERM $gw; wait $gw || true
