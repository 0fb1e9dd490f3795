#!/usr/bin/env bash
# Chooses the average chunk size on real upgrade pairs: two releases of the
# same program (staticcheck 0.8.1 -> 0.8.2) as built binaries and as source
# trees, and two releases of golang.org/x/sys as source trees. Reports, per
# candidate average, the share of the new release that must travel and the
# chunk count a manifest carries. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/bench/out/chunksize
mkdir -p "$out"
export GOFLAGS=-mod=mod
for v in v0.8.1 v0.8.2; do
  [ -x "$out/$v/staticcheck" ] || GOBIN="$out/$v" go install "honnef.co/go/tools/cmd/staticcheck@$v"
done
for m in honnef.co/go/tools@v0.8.1 honnef.co/go/tools@v0.8.2 golang.org/x/sys@v0.41.0 golang.org/x/sys@v0.49.0; do
  go mod download "$m"
done
mod=$(go env GOMODCACHE)
run() {
  echo "== $1"
  TED_CHUNK_PAIR="$2:$3" go test -run '^$' -bench 'BenchmarkChunkSizes' -benchtime 2x ./distribution | grep Benchmark
}
{
  run "staticcheck binary 0.8.1 -> 0.8.2" "$out/v0.8.1/staticcheck" "$out/v0.8.2/staticcheck"
  run "staticcheck source 0.8.1 -> 0.8.2" "$mod/honnef.co/go/tools@v0.8.1" "$mod/honnef.co/go/tools@v0.8.2"
  run "x/sys source 0.41.0 -> 0.49.0" "$mod/golang.org/x/sys@v0.41.0" "$mod/golang.org/x/sys@v0.49.0"
} | tee "$out/result.txt"
