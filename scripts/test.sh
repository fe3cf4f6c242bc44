#!/usr/bin/env bash
# The one command that checks everything, on a fresh Debian machine as on a
# developer's: installs what the tests need, checks formatting and vet,
# compiles the firmware with a real TinyGo, fuzzes every decoder for a
# bounded time and runs the whole test suite. CI runs exactly this.
#
#   FUZZTIME=200000x budget of each fuzz target (0 skips fuzzing). A count
#                    (Nx), not a duration: Go 1.26's fuzz coordinator can fail
#                    a target with "context deadline exceeded" at a duration
#                    budget's end without any finding (golang/go#75804).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin
FUZZTIME=${FUZZTIME:-200000x}

step() { printf '\n=== %s\n' "$*"; }

step "packages: Mosquitto, nats-server, libcoap, PostgreSQL, Chromium, qemu and systemd for the broker, upstream, CoAP, provider, console, cross-architecture and service tests; gcc, clang and the Arm toolchain for the C client; promtool for the alert rules; SoftHSM2 for a key in a token"
bash scripts/apt-install.sh mosquitto mosquitto-clients nats-server libcoap3-bin postgresql chromium qemu-user-static systemd \
  clang libclang-rt-14-dev gcc-arm-none-eabi libnewlib-arm-none-eabi libmosquitto-dev libcoap3-dev prometheus softhsm2

step "go version"
go version

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "not gofmt'ed:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "go mod tidy: go.mod and go.sum already say what the code imports"
if ! go mod tidy -diff; then
  echo "go mod tidy would change go.mod or go.sum (the diff above): run go mod tidy"; exit 1
fi

step "metering: the money logic's tests cover at least 80 % of its statements"
cover=$(go test -count=1 -cover ./metering | sed -n 's/.*coverage: \([0-9.]*\)% of statements.*/\1/p')
echo "metering coverage: ${cover:-none}%"
if [ -z "$cover" ] || ! awk -v c="$cover" 'BEGIN { exit !(c >= 80) }'; then
  echo "metering's coverage fell below 80 %: test what you added"; exit 1
fi

step "TinyGo: firmware compiles for microcontrollers"
bash scripts/tinygo-check.sh

step "C client: cross-compiled for Cortex-M0+ and M4"
bash scripts/c-client-check.sh

if [ "$FUZZTIME" != "0" ]; then
  step "fuzz: each target for $FUZZTIME"
  for pkgfuzz in \
    ./protocol/strict:FuzzDecodeTicket \
    ./protocol/strict:FuzzDecodeReceipt \
    ./protocol/strict:FuzzDecodeAggregate \
    ./protocol/strict:FuzzDecodeVoucher \
    ./protocol/strict:FuzzDecodeCredit \
    ./protocol/strict:FuzzDecodeRestore \
    ./protocol/strict:FuzzDecodeHold \
    ./protocol/strict:FuzzDecode \
    ./protocol/strict:FuzzReceiptDecoders \
    ./protocol/strict:FuzzEnvelopeParsers \
    ./protocol:FuzzPaywordMessages \
    ./protocol:FuzzGrantMessages \
    ./protocol/strict:FuzzDecodeCommand \
    ./protocol/strict:FuzzDecodeCommandAck \
    ./protocol/internal/tinysha:FuzzEqualsCryptoSHA256 \
    ./devicefw:FuzzDeviceTicketDecodes \
    ./metering:FuzzParseMoney \
    ./metering:FuzzParseTariffs \
    ./metering:FuzzStateDecode \
    ./metering:FuzzExactCharging \
    ./metering:FuzzSplit \
    ./gateway/store:FuzzApplyRecord; do
    pkg=${pkgfuzz%%:*} fz=${pkgfuzz##*:}
    echo "--- $fz ($pkg)"
    log=$(mktemp)
    if ! go test "$pkg" -run '^$' -fuzz "^$fz\$" -fuzztime "$FUZZTIME" >"$log" 2>&1; then
      cat "$log"; echo "fuzz target $fz failed; the input is in $pkg/testdata/fuzz/$fz"; exit 1
    fi
    tail -n 1 "$log"; rm -f "$log"
  done
fi

step "release: static binaries for amd64, arm64 and armv7, .deb packages; arm daemons under qemu; the .deb installed"
bash scripts/package-test.sh

step "go test (race detector on)"
go test -race -count=1 ./...
