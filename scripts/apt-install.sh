#!/usr/bin/env bash
# Installs Debian packages that are missing, running `apt-get update` at
# most once per machine. Usage: apt-install.sh PACKAGE...
set -euo pipefail
need=""
for p in "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "apt-install: installing$need" >&2
if [ ! -f /var/lib/apt/lists/.farthing-updated ]; then
  apt-get update -qq >&2
  touch /var/lib/apt/lists/.farthing-updated
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >&2
