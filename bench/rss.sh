#!/usr/bin/env bash
# Peak memory of `ted dist build` against the size of what it builds: the
# budget (bench/README.md) is that node memory does not grow with distribution
# size. Builds SMALL and LARGE bytes of random data and prints both peaks
# and their ratio (1.0 = no growth). Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
small=${SMALL:-268435456}   # 256 MiB
large=${LARGE:-1073741824}  # 1 GiB
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/ted" ./cmd/ted
"$work/ted" pki signing-key --out "$work/key" >/dev/null
peak() { # bytes -> KiB of peak RSS
  mkdir -p "$work/src-$1"
  head -c "$1" /dev/urandom > "$work/src-$1/data.bin"
  sync
  /usr/bin/time -f "%M" -o "$work/rss-$1" "$work/ted" dist build --store "$work/store-$1" --name big \
    --from "$work/src-$1" --version 1.0.0 --channel c --sign-key "$work/key" >/dev/null
  cat "$work/rss-$1"
}
a=$(peak "$small")
b=$(peak "$large")
echo "peak RSS building $((small >> 20)) MiB: $((a / 1024)) MiB"
echo "peak RSS building $((large >> 20)) MiB: $((b / 1024)) MiB"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio large/small: %.2f\n", b / a }'
