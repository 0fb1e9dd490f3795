#!/usr/bin/env bash
# Build throughput on one core: 1 GiB of incompressible bytes into a real
# badger store, the same without a store, the read+SHA-256 floor, and the Go
# installation as a real tree. Figures and how to read them: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go test -run '^$' -bench 'Build(Incompressible|NoStore|Goroot)|ReadHash' -benchtime 2x -cpu 1 ./distribution \
  | tee bench/out/build.txt
awk '/BenchmarkBuildIncompressible/ {b=$(NF-3)} /BenchmarkReadHash/ {r=$(NF-1)}
     END { if (b && r) printf "build / read+hash floor (wall MB/s): %.2f\n", b / r }' bench/out/build.txt
