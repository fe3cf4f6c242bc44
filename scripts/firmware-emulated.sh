#!/usr/bin/env bash
# Builds firmware for an emulated Cortex-M3 (QEMU's lm3s6965evb) with TinyGo
# and links it: `firmware-emulated.sh PACKAGE OUT.elf [TINYGO FLAGS...]`.
#
# TinyGo's cortex-m-qemu target builds its C library (picolibc) and its
# compiler runtime (compiler-rt) from sources that the Go module proxy's copy
# of TinyGo does not carry. So this links against what Debian ships for the
# same core instead: picolibc's libc.a for thumb/v7-m (picolibc-arm-none-eabi,
# the C library TinyGo itself uses) and libgcc.a from gcc-arm-none-eabi for
# the compiler's helpers. The target is cortex-m-qemu's, written out whole
# with those two libraries in place of the ones TinyGo would build, and
# without the stack-size analysis (it cannot read the .debug_frame of
# Debian's archives); the goroutine stack is set with -stack-size.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ $# -ge 2 ] || { echo "usage: firmware-emulated.sh PACKAGE OUT.elf [TINYGO FLAGS...]" >&2; exit 2; }
pkg=$1 out=$2
shift 2

bash scripts/apt-install.sh picolibc-arm-none-eabi gcc-arm-none-eabi qemu-system-arm
root=$(bash scripts/tinygo-setup.sh | tail -n 1)
export TINYGOROOT=$root
libc=/usr/lib/picolibc/arm-none-eabi/lib/thumb/v7-m/nofp
libgcc=$(dirname "$(arm-none-eabi-gcc -mcpu=cortex-m3 -mthumb -print-libgcc-file-name)")
[ -f "$libc/libc.a" ] && [ -f "$libgcc/libgcc.a" ] || { echo "firmware-emulated: no libc.a in $libc or libgcc.a in $libgcc" >&2; exit 1; }

target=$(mktemp --suffix=.json)
trap 'rm -f "$target"' EXIT
python3 - "$root" "$libc" "$libgcc" > "$target" <<'PY'
import json, sys
root, libc, libgcc = sys.argv[1:]
t = {}
for name in ("cortex-m", "cortex-m3", "cortex-m-qemu"):
    for k, v in json.load(open(f"{root}/targets/{name}.json")).items():
        if k == "inherits":
            continue
        t[k] = t[k] + v if k in ("extra-files", "build-tags", "cflags", "ldflags") and k in t else v
del t["rtlib"], t["libc"]
t["automatic-stack-size"] = False
# libgcc's helpers carry ARM unwind tables whose personality routine wants
# the exception index's bounds; firmware never unwinds, so they are empty.
t["ldflags"] += ["-L" + libc, "-L" + libgcc, "-lc", "-lgcc", "--defsym=__exidx_start=0", "--defsym=__exidx_end=0"]
json.dump(t, sys.stdout, indent=1)
PY
"$root/build/tinygo" build -o "$out" -target="$target" -opt=z "$@" "$pkg"
