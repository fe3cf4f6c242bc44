#!/usr/bin/env bash
# Compiles the firmware with a real TinyGo for microcontroller targets and
# prints the object sizes. TinyGo is built and cached by tinygo-setup.sh.
# Linking needs C library sources that are not available here, so each
# target is built to an object file (.o).
#
# Besides the smartplug example (with Ed25519, build tag farthing_ed25519),
# it builds the smallest HMAC, HMAC-with-grants and payword firmware
# (devicefw/examples/sizes) and an empty program, prints text/data/bss of
# each mode over the empty program's, and fails if a mode's text passes
# FIRMWARE_TEXT_MAX bytes (default 16384) on cortex-m.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

root=$(bash scripts/tinygo-setup.sh | tail -n 1)
export TINYGOROOT=$root
tinygo=$root/build/tinygo
out=${TMPDIR:-/tmp}/farthing-tinygo
mkdir -p "$out"
max=${FIRMWARE_TEXT_MAX:-16384}

sizer=$(command -v llvm-size-19 || command -v llvm-size || true)
build() { # TARGET NAME PKG [TAGS]
  local obj=$out/$2-$1.o
  rm -f "$obj"
  "$tinygo" build -o "$obj" -target="$1" -opt=z ${4:+-tags "$4"} "$3"
  [ -s "$obj" ] || { echo "tinygo-check: $1: $2: no object produced" >&2; exit 1; }
  echo "$obj"
}
for target in ${TINYGO_TARGETS:-cortex-m-qemu riscv-qemu}; do
  obj=$(build "$target" smartplug ./devicefw/examples/smartplug farthing_ed25519)
  echo "tinygo-check: $target: smartplug ok, $(stat -c %s "$obj") bytes object file"
  [ -n "$sizer" ] || continue
  "$sizer" "$obj" | sed "s/^/tinygo-check: $target: /"
  read -r et ed eb _ < <("$sizer" "$(build "$target" empty ./devicefw/examples/sizes/empty)" | tail -n 1)
  for mode in hmac grant payword; do
    read -r t d b _ < <("$sizer" "$(build "$target" "$mode" "./devicefw/examples/sizes/$mode")" | tail -n 1)
    echo "tinygo-check: $target: $mode firmware over an empty program: text $((t - et)) data $((d - ed)) bss $((b - eb)) bytes"
    if [ "$target" = cortex-m-qemu ] && [ $((t - et)) -gt "$max" ]; then
      echo "tinygo-check: $target: the $mode firmware's text ($((t - et)) bytes) is over $max" >&2
      exit 1
    fi
  done
done

# The smallest HMAC firmware linked whole for the emulated Cortex-M3 (with
# Debian's picolibc and libgcc: scripts/firmware-emulated.sh): the image a
# board would flash.
elf=$out/hmac-linked.elf
bash scripts/firmware-emulated.sh ./devicefw/examples/sizes/hmac "$elf" >/dev/null
if [ -n "$sizer" ]; then
  "$sizer" "$elf" | tail -n 1 | awk '{print "tinygo-check: cortex-m-qemu: hmac firmware linked image: text " $1 " data " $2 " bss " $3 " bytes"}'
fi
