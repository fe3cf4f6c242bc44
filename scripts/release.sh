#!/usr/bin/env bash
# Builds Farthing's release: static binaries (CGO off) of farthingd and
# farthing for linux/amd64, linux/arm64 and linux/arm (v7), and one .deb
# per architecture made by nfpm (the binaries, the systemd unit,
# /etc/farthing/farthingd.yaml, /var/lib/farthing).
#
#   scripts/release.sh [DIST]    default DIST: dist
#
# The version is the checkout's tag (git describe), or 0.0.0~git plus the
# commit's date and hash; VERSION=... overrides it. The binaries carry the
# VCS revision (farthing version, farthingd --version).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:$HOME/go/bin
DIST=${1:-dist}
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

if [ -z "${VERSION:-}" ]; then
  if tag=$(git describe --tags --exact-match 2>/dev/null); then
    VERSION=${tag#v}
  elif rev=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    VERSION=0.0.0~git$(git show -s --format=%cd --date=format:%Y%m%d%H%M%S HEAD).$rev
  else
    VERSION=0.0.0~dev
  fi
fi
vcs=false
git rev-parse --git-dir >/dev/null 2>&1 && vcs=true

rm -rf "$DIST"
mkdir -p "$DIST"
# ARCH (nfpm's name) GOARCH GOARM
for target in "amd64 amd64 " "arm64 arm64 " "arm7 arm 7"; do
  read -r arch goarch goarm <<<"$target"
  echo "release: linux/$goarch${goarm:+ v$goarm}"
  mkdir -p "$DIST/$arch"
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
    go build -trimpath -buildvcs=$vcs -ldflags='-s -w' -o "$DIST/$arch/" ./cmd/farthingd ./cmd/farthing
  # nfpm expands the environment in some fields only; the file names are
  # filled in here.
  sed -e "s|\${DIST}|$DIST|g" -e "s|\${ARCH}|$arch|g" -e "s|\${VERSION}|$VERSION|g" packaging/nfpm.yaml >"$DIST/nfpm-$arch.yaml"
  go run "$NFPM" package --config "$DIST/nfpm-$arch.yaml" --packager deb --target "$DIST/" >/dev/null
  rm "$DIST/nfpm-$arch.yaml"
done
ls -l "$DIST"/*.deb "$DIST"/*/farthing*
