#!/usr/bin/env bash
# Cross-compiles the C client (devicefw/c/farthing.c) for Cortex-M0+ and
# Cortex-M4 with arm-none-eabi-gcc -Os, prints its text/data/bss, and
# fails if its text passes C_CLIENT_TEXT_MAX bytes (default 6144).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt-install.sh gcc-arm-none-eabi libnewlib-arm-none-eabi
max=${C_CLIENT_TEXT_MAX:-6144}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for cpu in cortex-m0plus cortex-m4; do
  arm-none-eabi-gcc -std=c99 -Os -mcpu=$cpu -mthumb -Wall -Wextra -Werror -ffunction-sections -c devicefw/c/farthing.c -o "$out/$cpu.o"
  read -r t d b _ < <(arm-none-eabi-size "$out/$cpu.o" | tail -n 1)
  echo "c-client-check: $cpu: text $t data $d bss $b bytes"
  if [ "$t" -gt "$max" ]; then
    echo "c-client-check: $cpu: the C client's text ($t bytes) is over $max" >&2
    exit 1
  fi
done
