#!/usr/bin/env bash
# Compiles the firmware example (devicefw + protocol) with a real TinyGo for
# microcontroller targets and prints the object sizes. TinyGo is built and
# cached by tinygo-setup.sh. Linking needs C library sources that are not
# available here, so each target is built to an object file (.o).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

root=$(bash scripts/tinygo-setup.sh | tail -n 1)
export TINYGOROOT=$root
tinygo=$root/build/tinygo
out=${TMPDIR:-/tmp}/farthing-tinygo
mkdir -p "$out"

sizer=$(command -v llvm-size-19 || command -v llvm-size || true)
for target in ${TINYGO_TARGETS:-cortex-m-qemu riscv-qemu}; do
  obj=$out/smartplug-$target.o
  rm -f "$obj"
  "$tinygo" build -o "$obj" -target="$target" -opt=z ./devicefw/examples/smartplug
  [ -s "$obj" ] || { echo "tinygo-check: $target: no object produced" >&2; exit 1; }
  echo "tinygo-check: $target: ok, $(stat -c %s "$obj") bytes object file"
  if [ -n "$sizer" ]; then
    "$sizer" "$obj" | sed "s/^/tinygo-check: $target: /"
  fi
done
