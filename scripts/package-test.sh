#!/usr/bin/env bash
# Checks the release as an operator of edge hardware would use it:
#  1. builds it (scripts/release.sh);
#  2. runs the arm64 and armv7 farthingd under qemu-user-static: each
#     starts, reports ready, takes tickets from the simulator over MQTT,
#     answers every one, reconciles to the nano (checked with that
#     architecture's own farthing CLI) and stops cleanly on SIGTERM;
#  3. installs the amd64 .deb with dpkg, checks its systemd unit with
#     systemd-analyze verify, its files, user and modes, runs the installed
#     daemon as its user on the packaged configuration, and removes it.
# Prints the binaries' sizes and each daemon's idle RSS under qemu.
# Needs root (dpkg) and qemu-user-static, systemd (scripts/test.sh
# installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -KILL "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "package-test: $*" >&2; [ -f "$work/daemon.log" ] && tail -n 30 "$work/daemon.log" >&2; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

dist=$work/dist
bash scripts/release.sh "$dist" >"$work/release.log" 2>&1 || { cat "$work/release.log"; fail "release build failed"; }
host=$dist/amd64/farthing
echo "binaries (bytes):"
for arch in amd64 arm64 arm7; do
  printf '  %-6s farthingd %9d  farthing %9d  .deb %9d\n' "$arch" \
    "$(stat -c %s "$dist/$arch/farthingd")" "$(stat -c %s "$dist/$arch/farthing")" "$(stat -c %s "$dist"/farthing_*_"$( [ $arch = arm7 ] && echo armhf || echo $arch)".deb)"
done

# smoke ARCH QEMU: the daemon of ARCH under QEMU, driven from this host.
smoke() {
  local arch=$1 qemu=$2
  local d=$work/smoke-$arch mport hport
  mport=$(freeport); hport=$(freeport)
  mkdir -p "$d/data"; chmod 700 "$d/data"
  cat >"$d/farthingd.yaml" <<YAML
data_dir: $d/data
accounts:
  - {id: fleet, kind: postpaid, currency: EUR, credit_limit: "1000000"}
providers:
  - {id: utility, window: 1s}
mqtt: {listen: "127.0.0.1:$mport"}
dtls: {listen: "off"}
http: {listen: "127.0.0.1:$hport"}
YAML
  cp packaging/tariffs.example.yaml "$d/data/tariffs.yaml"
  "$host" device add --data "$d/data" --config "$d/farthingd.yaml" --count 20 --prefix plug- --type hmac --account fleet --provider utility --tariff energy_wh=energy >/dev/null 2>&1
  "$qemu" "$dist/$arch/farthingd" --version
  "$qemu" "$dist/$arch/farthingd" --config "$d/farthingd.yaml" >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "$arch: farthingd exited before it was ready"
    sleep 0.5
  done
  curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null || fail "$arch: farthingd not ready within 60 s"
  sleep 3
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status")
  "$host" sim --data "$d/data" --broker "tcp://127.0.0.1:$mport" --rate 100 --duration 5s --json >"$d/sim.json" 2>"$d/sim.log" ||
    { cat "$d/sim.log"; fail "$arch: the simulator failed"; }
  python3 - "$d/sim.json" "$arch" <<'PY' || fail "$arch: the simulator's report"
import json, sys
r = json.load(open(sys.argv[1]))
sent, accepted = r["sent"], r["accepted"]
missing = r.get("receipts_missing", 0) + r.get("bad_receipts", 0)
if sent < 100 or accepted != sent or missing:
    sys.exit(f"{sys.argv[2]}: sent {sent}, accepted {accepted}, missing or bad {missing}")
print(f"  {sys.argv[2]}: {sent} tickets sent, {accepted} accepted with a verified receipt")
PY
  "$qemu" "$dist/$arch/farthing" inspect --data "$d/data" >"$d/inspect.txt" || fail "$arch: farthing inspect"
  grep -q '"balanced": true' "$d/inspect.txt" || { cat "$d/inspect.txt"; fail "$arch: the books do not reconcile"; }
  kill -TERM "$daemon_pid"
  wait "$daemon_pid" || fail "$arch: farthingd did not exit 0 after SIGTERM"
  daemon_pid=""
  echo "  $arch: idle RSS under qemu $((rss / 1024)) MiB ($rss KiB, qemu's own memory included); reconciled; stopped cleanly"
}
echo "smoke tests under qemu-user-static:"
smoke arm64 qemu-aarch64-static
smoke arm7 qemu-arm-static

echo "the amd64 .deb:"
deb=$(ls "$dist"/farthing_*_amd64.deb)
dpkg-deb --info "$deb" | grep -E 'Package|Version|Architecture'
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge farthing >/dev/null 2>&1 || true; cleanup' EXIT
for f in /usr/bin/farthingd /usr/bin/farthing /lib/systemd/system/farthingd.service /etc/farthing/farthingd.yaml; do
  [ -e "$f" ] || fail "the package did not install $f"
done
id farthing >/dev/null || fail "no farthing user"
[ "$(stat -c '%a %U:%G' /etc/farthing/farthingd.yaml)" = "640 root:farthing" ] || fail "/etc/farthing/farthingd.yaml: $(stat -c '%a %U:%G' /etc/farthing/farthingd.yaml)"
[ "$(stat -c '%a %U' /var/lib/farthing)" = "700 farthing" ] || fail "/var/lib/farthing: $(stat -c '%a %U' /var/lib/farthing)"
systemd-analyze verify /lib/systemd/system/farthingd.service 2>"$work/verify.log" || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
if grep -v -e 'Cannot find unit' -e '^$' "$work/verify.log" | grep -q farthingd; then
  cat "$work/verify.log"; fail "systemd-analyze verify warned about the unit"
fi
systemd-analyze security --offline=true --threshold=30 /lib/systemd/system/farthingd.service >"$work/security.log" 2>&1 ||
  { tail -n 40 "$work/security.log"; fail "systemd-analyze security: exposure above 3.0"; }
echo "  systemd-analyze verify: clean; security: $(grep -o 'Overall exposure level.*' "$work/security.log")"
/usr/bin/farthingd --version
/usr/bin/farthingd --config /etc/farthing/farthingd.yaml --print-config >/dev/null || fail "the packaged configuration does not load"
# The installed daemon, as its user, on the packaged configuration (with
# its ports moved off the defaults this machine may be using).
mport=$(freeport); hport=$(freeport); dport=$(freeport)
sed -e "s|127.0.0.1:1883|127.0.0.1:$mport|" -e "s|127.0.0.1:9100|127.0.0.1:$hport|" -e "s|127.0.0.1:5684|127.0.0.1:$dport|" \
  /etc/farthing/farthingd.yaml >"$work/installed.yaml"
chmod 644 "$work/installed.yaml"; chmod 755 "$work"
setpriv --reuid=farthing --regid=farthing --init-groups /usr/bin/farthingd --config "$work/installed.yaml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 40); do curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null 2>&1 && break; sleep 0.25; done
curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null || fail "the installed daemon is not ready"
[ "$(stat -c '%a %U' /var/lib/farthing/gateway.key)" = "600 farthing" ] || fail "gateway.key: $(stat -c '%a %U' /var/lib/farthing/gateway.key)"
runuser -u farthing -- /usr/bin/farthing inspect --data /var/lib/farthing | grep -q '"balanced": true' || fail "farthing inspect as the service user"
kill -TERM "$daemon_pid"; wait "$daemon_pid" || fail "the installed daemon did not exit 0"
daemon_pid=""
echo "  installed, ran as user farthing, answered farthing inspect, stopped"
dpkg --purge farthing >/dev/null
[ ! -e /usr/bin/farthingd ] || fail "dpkg --purge left /usr/bin/farthingd"
rm -rf /var/lib/farthing
echo "  removed"
